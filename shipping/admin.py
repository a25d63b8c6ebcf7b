"""Shipments in the Django admin: the record of what was scheduled, and the operator's two
steps of the parcel's life (handed to the carrier, delivered), each an event."""

from django.contrib import admin, messages

from shipping.models import Shipment
from shipping.services import (
    ShipmentTransitionRefused,
    shipment_deliver,
    shipment_hand_to_carrier,
)


@admin.register(Shipment)
class ShipmentAdmin(admin.ModelAdmin):
    list_display = ["order_id", "carrier", "tracking_number", "status", "created_at"]
    list_filter = ["carrier", "status"]
    search_fields = ["=order_id", "tracking_number"]
    fields = ["order_id", "carrier", "tracking_number", "status", "lines", "created_at"]
    readonly_fields = fields
    actions = ["hand_to_carrier", "mark_delivered"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_move_permission(self, request):
        return request.user.has_perm("shipping.change_shipment")

    @admin.action(
        description="Hand to the carrier (no cancellation after this)", permissions=["move"]
    )
    def hand_to_carrier(self, request, queryset):
        self._advance(request, queryset, shipment_hand_to_carrier, "handed to the carrier")

    @admin.action(description="Mark delivered", permissions=["move"])
    def mark_delivered(self, request, queryset):
        self._advance(request, queryset, shipment_deliver, "delivered")

    def _advance(self, request, queryset, step, done: str) -> None:
        moved, refused = 0, []
        for shipment_id in queryset.values_list("pk", flat=True):
            try:
                shipment = step(shipment_id=shipment_id)
            except ShipmentTransitionRefused as exc:
                refused.append(str(exc))
                continue
            self.log_change(request, shipment, f"Shipment {done}.")
            moved += 1
        if moved:
            self.message_user(request, f"{moved} shipment(s) {done}.", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, f"Not changed: {reason}", messages.WARNING)

"""Shipments in the Django admin: a record of what was scheduled, read-only."""

from django.contrib import admin

from shipping.models import Shipment


@admin.register(Shipment)
class ShipmentAdmin(admin.ModelAdmin):
    list_display = ["order_id", "carrier", "tracking_number", "status", "created_at"]
    list_filter = ["carrier", "status"]
    search_fields = ["=order_id", "tracking_number"]
    fields = ["order_id", "carrier", "tracking_number", "status", "lines", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

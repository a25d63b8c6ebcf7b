"""Orders in the admin: read-only, because an order's status is the saga's to change."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from orders.models import CatalogItem, Order, OrderLine
from orders.selectors import order_timeline


class ReadOnlyAdminMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OrderLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = OrderLine
    extra = 0
    can_delete = False
    fields = ["sku", "quantity", "unit_price"]
    readonly_fields = fields


@admin.register(Order)
class OrderAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "reference",
        "customer",
        "status",
        "cancellation_reason",
        "total",
        "payment_status",
        "created_at",
    ]
    list_filter = ["status", "cancellation_reason"]
    search_fields = ["=id", "=reference", "customer__username", "=correlation_id"]
    list_select_related = ["customer"]
    ordering = ["-created_at", "-id"]
    date_hierarchy = "created_at"
    inlines = [OrderLineInline]
    fields = [
        "id",
        "reference",
        "saga_flow",
        "customer",
        "status",
        "cancellation_reason",
        "currency",
        "total",
        "correlation_id",
        "idempotency_key",
        "payment_status",
        "payment_amount",
        "shipment_status",
        "shipment_carrier",
        "shipment_tracking_number",
        "created_at",
        "updated_at",
        "timeline",
    ]
    readonly_fields = fields

    @admin.display(description="saga flow")
    def saga_flow(self, obj: Order):
        return format_html(
            '<a href="{}">Open the saga flow: sequence diagram and timeline</a>',
            reverse("order_pages:order-flow", args=[obj.reference]),
        )

    @admin.display(description="timeline")
    def timeline(self, obj: Order):
        events = order_timeline(order=obj)
        if not events:
            return "No events (they may have been purged by retention)."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    event.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    event.type,
                    event.id,
                    format_html_join(
                        "",
                        "<div>{}: {} ({} attempts){}</div>",
                        (
                            (
                                d.subscriber,
                                d.status,
                                d.attempts,
                                f" - {d.last_error}" if d.last_error else "",
                            )
                            for d in event.deliveries
                        ),
                    )
                    or "no subscribers",
                )
                for event in events
            ),
        )
        return format_html(
            "<table><thead><tr><th>occurred at</th><th>event</th><th>id</th>"
            "<th>deliveries</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(CatalogItem)
class CatalogItemAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["sku", "name", "price", "currency", "updated_at"]
    search_fields = ["sku", "name"]
    ordering = ["sku"]

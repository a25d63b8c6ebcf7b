"""Orders in the admin: read-only, because an order's status is the saga's to change."""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from orders.models import CatalogItem, Order, OrderLine, SagaInFlight
from orders.selectors import (
    order_timeline,
    saga_filter,
    saga_in_flight_queryset,
    saga_rows,
)
from orders.services import OrderNotCancellable, saga_cancel, saga_retry


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


# --- the operator's saga console ----------------------------------------------------------------


class SagaStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("stuck", "stuck (no progress lately)"),
            ("dead", "dead-lettered"),
            ("compensating", "compensating (cancellation on its way)"),
        ]

    def queryset(self, request, queryset):
        if self.value() in ("stuck", "dead", "compensating"):
            return saga_filter(queryset, state=self.value())
        return queryset


@admin.register(SagaInFlight)
class SagaInFlightAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Sagas in flight, oldest first, each with the step it waits on; retry or cancel them."""

    list_display = ["order_link", "status", "age", "waiting_on", "compensating", "flow"]
    list_filter = [SagaStateFilter, "status"]
    search_fields = ["=id", "=reference", "=correlation_id"]
    list_per_page = 50
    actions = ["retry_dead", "cancel_with_compensation"]

    def get_queryset(self, request):
        return saga_in_flight_queryset()

    def has_view_permission(self, request, obj=None):
        # Each row shows the step a saga waits on: subscribers and errors are the machinery.
        return request.user.has_perms(["orders.view_order", "orders.view_order_machinery"])

    def has_operate_permission(self, request):
        return request.user.has_perm("orders.change_order")

    def get_changelist_instance(self, request):
        # The page's deliveries in one query, kept on each row's object for its cells.
        changelist = super().get_changelist_instance(request)
        for row in saga_rows(list(changelist.result_list)):
            row.order.saga_row = row
        return changelist

    @staticmethod
    def _row(obj):
        return getattr(obj, "saga_row", None) or saga_rows([obj])[0]

    @admin.display(description="order", ordering="id")
    def order_link(self, obj):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:orders_order_change", args=[obj.pk]),
            obj.reference,
        )

    @admin.display(description="age", ordering="created_at")
    def age(self, obj):
        seconds = int((timezone.now() - obj.created_at).total_seconds())
        return f"{seconds // 3600}h {seconds % 3600 // 60}m {seconds % 60}s"

    @admin.display(description="waiting on")
    def waiting_on(self, obj):
        step = self._row(obj).waiting_on
        if step is None:
            return "no delivery open"
        return format_html(
            "{} &larr; {}: {} ({} attempt{}){}",
            step.subscriber,
            step.event_type,
            "DEAD LETTER" if step.status == "dead" else step.status,
            step.attempts,
            "" if step.attempts == 1 else "s",
            f" - {step.last_error}" if step.last_error else "",
        )

    @admin.display(description="compensating", boolean=True)
    def compensating(self, obj):
        return obj.cancellation_requested_at is not None

    @admin.display(description="flow")
    def flow(self, obj):
        return format_html(
            '<a href="{}">flow</a>', reverse("order_pages:order-flow", args=[obj.reference])
        )

    @admin.action(description="Retry the dead-lettered steps", permissions=["operate"])
    def retry_dead(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            action="retry_dead",
            title="Retry the dead-lettered steps",
            explanation="Each saga's dead letters are delivered again with fresh attempts.",
            perform=lambda order, reason: self.message_user(
                request,
                f"Order {order.reference}: "
                f"{saga_retry(order_id=order.pk, user=request.user, reason=reason)} "
                "step(s) retried.",
                messages.SUCCESS,
            ),
        )

    @admin.action(description="Cancel with compensation", permissions=["operate"])
    def cancel_with_compensation(self, request, queryset):
        def perform(order, reason):
            try:
                saga_cancel(order_id=order.pk, user=request.user, reason=reason)
            except OrderNotCancellable as exc:
                self.message_user(
                    request, f"Order {order.reference}: {exc.reason}", messages.WARNING
                )
            else:
                self.message_user(
                    request, f"Order {order.reference}: cancellation requested.", messages.SUCCESS
                )

        return self._with_reason(
            request,
            queryset,
            action="cancel_with_compensation",
            title="Cancel with compensation",
            explanation=(
                "The shipment is cancelled, the payment refunded and the stock released; the "
                "order ends cancelled (operator_cancelled). Refused once the parcel left."
            ),
            perform=perform,
        )

    def _with_reason(self, request, queryset, *, action, title, explanation, perform):
        """Ask why first (an intermediate page); then act on each order and record it."""
        reason = request.POST.get("reason", "")
        error = None
        if "apply" in request.POST:
            if reason.strip():
                for order in queryset:
                    try:
                        perform(order, reason)
                    except ValidationError as exc:
                        self.message_user(request, "; ".join(exc.messages), messages.ERROR)
                return None
            error = "Say why: the reason is kept in the admin's history."
        return TemplateResponse(
            request,
            "admin/orders/saga_action.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "explanation": explanation,
                "orders": list(queryset),
                "action": action,
                "error": error,
                "opts": self.model._meta,
            },
        )

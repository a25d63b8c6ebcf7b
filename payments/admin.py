"""Payments in the admin: to look, never to touch.

Editing a payment or a refund by hand would break the saga's invariants (one capture per order,
one refund per captured payment of a cancelled order) without publishing the events the other
apps rely on, so they are read-only, and so are the gateway attempts: an unresolved one is
answered with ``manage.py payments_attempt_resolve``, which keeps those invariants.
"""

from django.contrib import admin

from payments.models import GatewayAttempt, Payment, Refund


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RefundInline(admin.StackedInline):
    model = Refund
    extra = 0
    can_delete = False
    fields = ["amount", "currency", "gateway_refund_id", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["order_id", "status", "amount", "currency", "decline_code", "created_at"]
    list_filter = ["status"]
    search_fields = ["=order_id", "=gateway_charge_id", "=refund__gateway_refund_id"]
    date_hierarchy = "created_at"
    inlines = [RefundInline]


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ["payment", "order_id", "amount", "currency", "gateway_refund_id", "created_at"]
    list_select_related = ["payment"]
    search_fields = ["=payment__order_id", "=gateway_refund_id", "=payment__gateway_charge_id"]
    date_hierarchy = "created_at"

    @admin.display(description="order id", ordering="payment__order_id")
    def order_id(self, obj):
        return obj.payment.order_id


@admin.register(GatewayAttempt)
class GatewayAttemptAdmin(ReadOnlyAdmin):
    """Calls to the gateway that move money. An ``unresolved`` one waits for an operator:
    ``manage.py payments_attempt_resolve`` (docs/architecture.md, "Calls that move money")."""

    list_display = ["order_id", "kind", "state", "amount", "currency", "runs", "created_at"]
    list_filter = ["state", "kind"]
    search_fields = ["=order_id", "=idempotency_key", "=gateway_reference"]
    date_hierarchy = "created_at"

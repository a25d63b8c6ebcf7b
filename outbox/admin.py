import json

from django.contrib import admin, messages
from django.utils.html import format_html

from outbox.events import payload_redact
from outbox.models import DeadLetter, Delivery, Event, Heartbeat
from outbox.replay import deliveries_replay


class ReadOnlyAdmin(admin.ModelAdmin):
    """The event store is an audit record: nobody edits it by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = [
        "subscriber",
        "status",
        "attempts",
        "next_attempt_at",
        "completed_at",
        "error_summary",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="last error")
    def error_summary(self, obj):
        return obj.last_error.split("\n", 1)[0]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "type", "version", "aggregate_type", "aggregate_id", "event_id"]
    list_filter = ["type", "aggregate_type"]
    search_fields = ["=event_id", "type", "=aggregate_id", "=correlation_id", "=causation_id"]
    date_hierarchy = "occurred_at"
    readonly_fields = [
        "event_id",
        "type",
        "version",
        "aggregate_type",
        "aggregate_id",
        "occurred_at",
        "correlation_id",
        "causation_id",
        "payload_pretty",
        "headers_pretty",
    ]
    exclude = ["payload", "headers"]
    inlines = [DeliveryInline]

    @admin.display(description="payload")
    def payload_pretty(self, obj):
        # Sensitive fields are sealed in the store and shown redacted (outbox/crypto.py).
        payload = payload_redact(obj.type, obj.payload)
        return format_html("<pre>{}</pre>", json.dumps(payload, indent=2, sort_keys=True))

    @admin.display(description="headers")
    def headers_pretty(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.headers, indent=2, sort_keys=True))


# Replaying runs a handler again (a charge at the gateway): its own permission, not viewing.
@admin.action(
    description="Replay selected deliveries (fresh attempts, due now)", permissions=["replay"]
)
def replay_deliveries(modeladmin, request, queryset):
    count = deliveries_replay(queryset)
    skipped = queryset.count() - count if not queryset.query.is_sliced else 0
    msg = f"{count} deliveries will be dispatched again."
    if skipped > 0:
        msg += f" {skipped} already done were left alone."
    modeladmin.message_user(request, msg, messages.SUCCESS)


class DeliveryAdminBase(ReadOnlyAdmin):
    list_display = [
        "id",
        "subscriber",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "error_summary",
    ]
    list_filter = ["status", "subscriber", "event__type"]
    search_fields = [
        "=event__event_id",
        "=event__aggregate_id",
        "=event__correlation_id",
        "subscriber",
    ]
    list_select_related = ["event"]
    readonly_fields = [
        "event_link",
        "subscriber",
        "status",
        "attempts",
        "next_attempt_at",
        "dispatched_at",
        "completed_at",
        "created_at",
        "updated_at",
        "ordered",
        "aggregate_key",
        "error_pre",
    ]
    exclude = ["event", "last_error"]
    actions = [replay_deliveries]

    def has_replay_permission(self, request) -> bool:
        return request.user.has_perm("outbox.replay_delivery")

    @admin.display(description="event", ordering="event__type")
    def event_type(self, obj):
        return obj.event.type

    @admin.display(description="last error")
    def error_summary(self, obj):
        return obj.last_error.split("\n", 1)[0][:120]

    @admin.display(description="last error")
    def error_pre(self, obj):
        return format_html("<pre>{}</pre>", obj.last_error)

    @admin.display(description="event")
    def event_link(self, obj):
        return format_html('<a href="../../../event/{}/change/">{}</a>', obj.event_id, obj.event)


@admin.register(Delivery)
class DeliveryAdmin(DeliveryAdminBase):
    pass


@admin.register(DeadLetter)
class DeadLetterAdmin(DeliveryAdminBase):
    list_filter = ["subscriber", "event__type"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=Delivery.Status.DEAD)


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["name", "beat_at"]

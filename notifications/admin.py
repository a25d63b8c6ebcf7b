"""The emails sent to customers, read-only: what was sent for which order event, to whom."""

from django.contrib import admin

from notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "kind", "order_reference", "recipient", "status", "subject"]
    list_filter = ["kind", "status"]
    search_fields = ["=order_reference", "recipient", "=event_id"]
    fields = [
        "event_id",
        "kind",
        "order_id",
        "order_reference",
        "recipient",
        "subject",
        "message_id",
        "status",
        "created_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

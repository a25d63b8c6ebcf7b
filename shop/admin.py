"""The admin of third-party models, held to the shop's rules: every action declares the
permission it needs (django-celery-beat's actions declare none, so anyone who may view the
periodic tasks could enable, disable or run them), and no page shows a usable API token."""

from django.contrib import admin
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask
from knox.models import AuthToken


def _needs_change_permission(name: str):
    original = getattr(beat_admin.PeriodicTaskAdmin, name)

    def action(modeladmin, request, queryset):
        return original(modeladmin, request, queryset)

    action.__name__ = name
    return admin.action(description=original.short_description, permissions=["change"])(action)


class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    enable_tasks = _needs_change_permission("enable_tasks")
    disable_tasks = _needs_change_permission("disable_tasks")
    toggle_tasks = _needs_change_permission("toggle_tasks")
    run_tasks = _needs_change_permission("run_tasks")


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, PeriodicTaskAdmin)


# API tokens: knox's admin lists each token's digest and lets one "add" a token with no key. Here
# a token is a row to look at or delete (which revokes it): never a key anyone could use.
admin.site.unregister(AuthToken)


@admin.register(AuthToken)
class AuthTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "created", "expiry"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    fields = ["user", "created", "expiry"]
    readonly_fields = fields
    ordering = ["-created"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

"""The admin of third-party models, held to the shop's rule: every action declares the
permission it needs (django-celery-beat's actions declare none, so anyone who may view the
periodic tasks could enable, disable or run them)."""

from django.contrib import admin
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask


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

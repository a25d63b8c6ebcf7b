"""Credentials and permissions for tests: an API token for a user (the one place that knows the
token model), and permissions granted to a user."""

from rest_framework.authtoken.models import Token


def api_token(user) -> str:
    token, _ = Token.objects.get_or_create(user=user)
    return token.key


def grant(user, *permissions: str):
    """Give ``user`` these permissions ("app_label.codename") and return it, fresh from the
    database (Django caches a user's permissions on the instance)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return get_user_model().objects.get(pk=user.pk)

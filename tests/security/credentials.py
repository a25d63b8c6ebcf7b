"""Credentials and permissions for tests: an API token for a user (the one place that knows the
token model), and permissions granted to a user."""

from knox.models import AuthToken


def api_token(user) -> str:
    """A new API token of ``user``, as POST /api/auth/token/ would give."""
    _instance, token = AuthToken.objects.create(user=user)
    return token


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

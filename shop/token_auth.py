"""The API's token authentication (REST_FRAMEWORK's DEFAULT_AUTHENTICATION_CLASSES names it).

A module of its own: knox's views read DEFAULT_AUTHENTICATION_CLASSES when they are imported,
so the class they would find must not live beside the views that import them (shop/auth.py).
"""

import binascii
from hmac import compare_digest

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox import auth as knox_auth
from knox.crypto import hash_token
from knox.models import get_token_model
from knox.settings import CONSTANTS, knox_settings
from knox.signals import token_expired
from rest_framework import exceptions

INVALID = "Invalid token."


class TokenAuthentication(knox_auth.TokenAuthentication):
    """knox's authentication in one statement per request, answering a token that is not UTF-8
    with a 401 (knox decodes it unguarded: a 500).

    knox reads the tokens of the key's prefix, then each one's user, then every token of that
    user to delete the expired ones, on every request: three statements where one does (the
    tokens of the prefix with their users, a join). What is checked is knox's: an expired token
    is deleted and refused (``token_expired`` sent), the digest compared in constant time, the
    user active, ``AUTO_REFRESH`` honoured. The user's other expired tokens are deleted when
    the user logs in (``shop/auth.py``), not on every request (issue 12, docs/benchmarks.md)."""

    def authenticate_credentials(self, token: bytes):
        try:
            token = token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(INVALID) from None
        digest = None
        candidates = (
            get_token_model()
            .objects.select_related("user")
            .filter(token_key=token[: CONSTANTS.TOKEN_KEY_LENGTH])
        )
        for auth_token in candidates:
            if auth_token.expiry is not None and auth_token.expiry < timezone.now():
                username = auth_token.user.get_username()
                auth_token.delete()
                token_expired.send(sender=self.__class__, username=username, source="auth_token")
                continue
            if digest is None:
                try:
                    digest = hash_token(token)
                except (TypeError, binascii.Error):
                    raise exceptions.AuthenticationFailed(INVALID) from None
            if compare_digest(digest, auth_token.digest):
                if knox_settings.AUTO_REFRESH and auth_token.expiry:
                    self.renew_token(auth_token)
                return self.validate_user(auth_token)
        raise exceptions.AuthenticationFailed(INVALID)


class TokenScheme(OpenApiAuthenticationExtension):
    """How the schema describes the token (as it did DRF's: an Authorization header)."""

    target_class = "shop.token_auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'An API token from POST /api/auth/token/, prefixed "Token ".',
        }

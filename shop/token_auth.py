"""The API's token authentication (REST_FRAMEWORK's DEFAULT_AUTHENTICATION_CLASSES names it).

A module of its own: knox's views read DEFAULT_AUTHENTICATION_CLASSES when they are imported,
so the class they would find must not live beside the views that import them (shop/auth.py).
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox import auth as knox_auth
from rest_framework import exceptions


class TokenAuthentication(knox_auth.TokenAuthentication):
    """knox's authentication, answering a token that is not UTF-8 with a 401 (knox decodes it
    unguarded: a 500)."""

    def authenticate_credentials(self, token: bytes):
        try:
            token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        return super().authenticate_credentials(token)


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

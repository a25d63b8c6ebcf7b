"""API tokens with a lifecycle (django-rest-knox): they expire, are stored hashed, a user may
hold several (one per client), and they are revoked on logout (one or all) and on a password
change.

``POST /api/auth/token/`` keeps the shape clients know (username and password in, ``token`` out,
now with its ``expiry``; wrong credentials a 401, throttled per username and address);
``Authorization: Token <key>`` is unchanged.
"""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import pre_save
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from knox import views as knox_views
from knox.models import AuthToken
from knox.settings import knox_settings
from rest_framework import exceptions, parsers, serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from shop.api import JSONParser
from shop.throttling import LoginAddressThrottle, LoginUsernameThrottle
from shop.token_auth import TokenAuthentication

TokenOutputSerializer = inline_serializer(
    "TokenOutput",
    {
        "token": serializers.CharField(help_text="Send it as `Authorization: Token <token>`."),
        "expiry": serializers.DateTimeField(help_text="When the token stops working."),
    },
)


class TokenObtainInputSerializer(serializers.Serializer):
    # Taken as sent (no trimming): a name or password that is wrong is a 401, not a 400.
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(
        max_length=128, trim_whitespace=False, style={"input_type": "password"}
    )


class TokenObtainApi(knox_views.LoginView):
    """A new token for the user whose username and password are posted. Wrong credentials are
    a 401 (the request itself was well formed); any Authorization header sent is ignored (this
    is how one logs in)."""

    authentication_classes = ()
    permission_classes = [AllowAny]
    # Throttled per username and per client address (THROTTLE_RATE_LOGIN, shop/throttling.py).
    throttle_scope = "login"
    throttle_classes = [LoginAddressThrottle, LoginUsernameThrottle]
    parser_classes = (JSONParser, parsers.FormParser, parsers.MultiPartParser)

    def get_authenticate_header(self, request):
        return "Token"

    @extend_schema(
        operation_id="auth_token_obtain",
        summary="Exchange a username and password for an API token (expires; one per client)",
        description=(
            "Send the token back as `Authorization: Token <token>`. Each call issues a new "
            "token, valid until its `expiry` (API_TOKEN_TTL_HOURS) or its revocation. Wrong "
            "credentials: 401."
        ),
        auth=[],
        request=TokenObtainInputSerializer,
        responses={
            200: TokenOutputSerializer,
            401: OpenApiResponse(description="Wrong username or password."),
            429: OpenApiResponse(description="Too many attempts for this username or address."),
        },
        examples=[
            OpenApiExample(
                "The demo customer",
                value={"username": "demo", "password": "demo-pass-123"},
                request_only=True,
            ),
        ],
    )
    def post(self, request, format=None):
        serializer = TokenObtainInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request=request, **serializer.validated_data)
        if user is None:
            raise exceptions.AuthenticationFailed("Unable to log in with provided credentials.")
        # The user's expired tokens go now (knox's authentication deleted them on every
        # request; shop/token_auth.py): the table keeps what works, and what expired since.
        AuthToken.objects.filter(user=user, expiry__lt=timezone.now()).delete()
        instance, token = AuthToken.objects.create(user=user, expiry=knox_settings.TOKEN_TTL)
        user_logged_in.send(sender=user.__class__, request=request, user=user)
        return Response({"token": token, "expiry": instance.expiry})


class TokenRevokeApi(knox_views.LogoutView):
    authentication_classes = [TokenAuthentication]

    @extend_schema(
        operation_id="auth_logout",
        summary="Revoke the token this request is made with",
        request=None,
        responses={204: None},
    )
    def post(self, request, format=None):
        return super().post(request, format)


class TokenRevokeAllApi(knox_views.LogoutAllView):
    authentication_classes = [TokenAuthentication]

    @extend_schema(
        operation_id="auth_logout_all",
        summary="Revoke every token of this user (every client logs in again)",
        request=None,
        responses={204: None},
    )
    def post(self, request, format=None):
        return super().post(request, format)


def tokens_revoke_on_password_change(sender, instance, raw=False, **kwargs) -> None:
    """A new password revokes every API token of the user: whoever had one logs in again.

    A receiver, not a service call: a password is changed by Django itself (admin, the
    password views, ``changepassword``), and this is no domain flow.
    """
    if raw or instance.pk is None:
        return
    stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    if stored is not None and stored != instance.password:
        AuthToken.objects.filter(user_id=instance.pk).delete()


def receivers_connect() -> None:
    pre_save.connect(
        tokens_revoke_on_password_change,
        sender=get_user_model(),
        dispatch_uid="shop.auth.tokens_revoke_on_password_change",
    )

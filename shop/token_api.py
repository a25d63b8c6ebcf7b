"""POST /api/auth/token/: a username and password exchanged for an API token."""

from django.contrib.auth import authenticate
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import exceptions, parsers, serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.response import Response

from shop.api import JSONParser
from shop.throttling import LoginAddressThrottle, LoginUsernameThrottle


class TokenObtainInputSerializer(serializers.Serializer):
    # Taken as sent (no trimming): a name or password that is wrong is a 401, not a 400.
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(
        max_length=128, trim_whitespace=False, style={"input_type": "password"}
    )


class TokenObtainApi(ObtainAuthToken):
    """DRF's token endpoint, answering wrong credentials with a 401 (the request itself was
    well formed) and ignoring any Authorization header it is sent (it is how one logs in)."""

    authentication_classes = ()
    # Throttled per username and per client address (THROTTLE_RATE_LOGIN, shop/throttling.py).
    throttle_scope = "login"
    throttle_classes = [LoginAddressThrottle, LoginUsernameThrottle]
    parser_classes = (JSONParser, parsers.FormParser, parsers.MultiPartParser)
    serializer_class = TokenObtainInputSerializer

    def get_authenticate_header(self, request):
        return "Token"

    @extend_schema(
        operation_id="auth_token_obtain",
        summary="Exchange a username and password for an API token",
        description=(
            "Send the token back as `Authorization: Token <token>`. The same user always gets "
            "the same token. Wrong credentials: 401."
        ),
        auth=[],
        request=TokenObtainInputSerializer,
        responses={
            200: inline_serializer("TokenOutput", {"token": serializers.CharField()}),
            401: OpenApiResponse(description="Wrong username or password."),
            429: OpenApiResponse(description="Too many attempts for this username or address."),
        },
        examples=[
            OpenApiExample(
                "The demo customer",
                value={"username": "demo", "password": "demo-pass-123"},
                request_only=True,
            ),
            OpenApiExample(
                "A token",
                value={"token": "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"},
                response_only=True,
            ),
        ],
    )
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request=request, **serializer.validated_data)
        if user is None:
            raise exceptions.AuthenticationFailed("Unable to log in with provided credentials.")
        token, _created = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})

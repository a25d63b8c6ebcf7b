"""The API's token endpoint."""

from rest_framework.authtoken.views import ObtainAuthToken

from shop.throttling import LoginAddressThrottle, LoginUsernameThrottle


class TokenObtainApi(ObtainAuthToken):
    """DRF's token endpoint, throttled per username and per client address
    (``THROTTLE_RATE_LOGIN``, shop/throttling.py)."""

    throttle_scope = "login"
    throttle_classes = [LoginAddressThrottle, LoginUsernameThrottle]  # DRF's view has none

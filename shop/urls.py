from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from shop.auth import TokenObtainApi, TokenRevokeAllApi, TokenRevokeApi

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/token/", TokenObtainApi.as_view(), name="api-token"),
    path("api/auth/logout/", TokenRevokeApi.as_view(), name="api-logout"),
    path("api/auth/logout-all/", TokenRevokeAllApi.as_view(), name="api-logout-all"),
    path("api/", include("inventory.urls")),
    path("api/", include("orders.urls")),
    path("", include("orders.urls_pages")),  # HTML: /orders/<id>/flow/, /accounts/login/
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # /metrics, /healthz, /readyz
    path("", include("shop.observability.urls")),
]

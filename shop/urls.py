from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from shop import problems
from shop.events_api import asyncapi_json
from shop.token_api import TokenObtainApi

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/token/", TokenObtainApi.as_view(), name="api-token"),
    path("api/", include("inventory.urls")),
    path("api/", include("orders.urls")),
    path("", include("orders.urls_pages")),  # HTML: /orders/<id>/flow/, /accounts/login/
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/asyncapi.json", asyncapi_json, name="asyncapi"),
    # /metrics, /healthz, /readyz
    path("", include("shop.observability.urls")),
    # Last: whatever else is under /api/ is a JSON 404 (a problem document), even with debug on.
    re_path(r"^api/", problems.api_not_found, name="api-not-found"),
]

# Errors Django answers outside any view: problem documents under /api/, HTML pages elsewhere.
handler400 = problems.bad_request
handler403 = problems.permission_denied
handler404 = problems.page_not_found
handler500 = problems.server_error

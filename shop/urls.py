from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path, reverse_lazy
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from shop import problems
from shop.auth import TokenObtainApi, TokenRevokeAllApi, TokenRevokeApi
from shop.events_api import AsyncApiDocumentApi

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/token/", TokenObtainApi.as_view(), name="api-token"),
    path("api/auth/logout/", TokenRevokeApi.as_view(), name="api-logout"),
    path("api/auth/logout-all/", TokenRevokeAllApi.as_view(), name="api-logout-all"),
    path("api/", include("inventory.urls")),
    path("api/", include("orders.urls")),
    path("", include("orders.urls_pages")),  # HTML: /orders/, /orders/<reference>/flow/
    # The site's login and logout (Django's own), for customers as well as staff (the admin's
    # login accepts staff only); settings.LOGIN_URL names this page.
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="shop/login.html",
            redirect_authenticated_user=True,
            next_page=reverse_lazy("order_pages:order-list"),
        ),
        name="login",
    ),
    path(
        "accounts/logout/",
        auth_views.LogoutView.as_view(next_page=reverse_lazy("login")),
        name="logout",
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/asyncapi.json", AsyncApiDocumentApi.as_view(), name="asyncapi"),
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

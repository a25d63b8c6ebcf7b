"""The orders app's HTML pages (the API's URLs are in orders/urls.py), and a plain login page.

Included at the site's root: /orders/, /orders/<reference>/flow/, /accounts/login/,
/accounts/logout/.
"""

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from orders import views

app_name = "order_pages"

urlpatterns = [
    path("orders/", views.order_list, name="order-list"),
    path("orders/<str:reference>/flow/", views.order_flow, name="order-flow"),
    # Django's own login and logout, for customers as well as staff (the admin's login page
    # accepts staff only). Django's default LOGIN_URL is this page's path.
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="orders/login.html",
            redirect_authenticated_user=True,
            next_page=reverse_lazy("order_pages:order-list"),
        ),
        name="login",
    ),
    path(
        "accounts/logout/",
        auth_views.LogoutView.as_view(next_page=reverse_lazy("order_pages:login")),
        name="logout",
    ),
]

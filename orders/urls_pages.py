"""The orders app's HTML pages (the API's URLs are in orders/urls.py).

Included at the site's root: /orders/, /orders/<reference>/flow/ (the login page is shop/urls.py's).
"""

from django.urls import path

from orders import views

app_name = "order_pages"

urlpatterns = [
    path("orders/", views.order_list, name="order-list"),
    path("orders/<str:reference>/flow/", views.order_flow, name="order-flow"),
]

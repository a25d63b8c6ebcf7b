from django.urls import path

from orders.api import OrderCancelApi, OrderDetailApi, OrderEventsApi, OrderListCreateApi

app_name = "orders"

urlpatterns = [
    path("orders/", OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<int:order_id>/", OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<int:order_id>/events/", OrderEventsApi.as_view(), name="order-events"),
    path("orders/<int:order_id>/cancel/", OrderCancelApi.as_view(), name="order-cancel"),
]

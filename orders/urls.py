from django.urls import path

from orders.api import OrderDetailApi, OrderEventsApi, OrderListCreateApi

app_name = "orders"

urlpatterns = [
    path("orders/", OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<str:reference>/", OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<str:reference>/events/", OrderEventsApi.as_view(), name="order-events"),
]

from django.urls import path

from orders.api import OrderCancelApi, OrderDetailApi, OrderEventsApi, OrderListCreateApi
from orders.api_sagas import SagaCancelApi, SagaListApi, SagaRetryApi

app_name = "orders"

urlpatterns = [
    path("orders/", OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<int:order_id>/", OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<int:order_id>/events/", OrderEventsApi.as_view(), name="order-events"),
    path("orders/<int:order_id>/cancel/", OrderCancelApi.as_view(), name="order-cancel"),
    # The operator's saga console (staff only).
    path("sagas/", SagaListApi.as_view(), name="saga-list"),
    path("sagas/<int:order_id>/retry/", SagaRetryApi.as_view(), name="saga-retry"),
    path("sagas/<int:order_id>/cancel/", SagaCancelApi.as_view(), name="saga-cancel"),
]

from django.urls import path

from orders.api import OrderCancelApi, OrderDetailApi, OrderEventsApi, OrderListCreateApi
from orders.api_sagas import SagaCancelApi, SagaListApi, SagaRetryApi

app_name = "orders"

urlpatterns = [
    path("orders/", OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<str:reference>/", OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<str:reference>/events/", OrderEventsApi.as_view(), name="order-events"),
    path("orders/<str:reference>/cancel/", OrderCancelApi.as_view(), name="order-cancel"),
    # The operator's saga console (staff only).
    path("sagas/", SagaListApi.as_view(), name="saga-list"),
    path("sagas/<str:reference>/retry/", SagaRetryApi.as_view(), name="saga-retry"),
    path("sagas/<str:reference>/cancel/", SagaCancelApi.as_view(), name="saga-cancel"),
]

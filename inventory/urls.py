from django.urls import path

from inventory.api import ProductDetailApi, ProductListApi

app_name = "inventory"

urlpatterns = [
    path("products/", ProductListApi.as_view(), name="product-list"),
    path("products/<str:sku>/", ProductDetailApi.as_view(), name="product-detail"),
]

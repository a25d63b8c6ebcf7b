"""The catalogue over HTTP: anyone reads it, users with the product permissions write it.
Serializers in, services, out."""

import re

from django.core.exceptions import ValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound
from rest_framework.permissions import AllowAny, DjangoModelPermissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inventory.models import PRICE_MIN, STOCK_MAX, Product, sku_validator
from inventory.selectors import product_get, product_list
from inventory.services import product_create, product_update


class ProductOutputSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    price = serializers.DecimalField(max_digits=10, decimal_places=2)
    available = serializers.IntegerField(help_text="Units on hand that no paid order reserved.")


# A positive amount with at most 8 digits before the point and 2 after, as a string.
PRICE_PATTERN = r"^(?=[0-9.]*[1-9])[0-9]{1,8}(\.[0-9]{1,2})?$"


@extend_schema_field(
    {
        "anyOf": [
            {"type": "string", "pattern": PRICE_PATTERN, "example": "19.99"},
            {"type": "integer", "minimum": 1, "maximum": 99_999_999},
        ]
    }
)
class PriceField(serializers.DecimalField):
    """A decimal string ("19.99"), or a JSON integer of whole units: never a JSON float, whose
    binary value is not the decimal the client wrote."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("invalid")
        if isinstance(data, str) and not re.fullmatch(PRICE_PATTERN[1:-1], data):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """Only a JSON integer: no "3", no 3.0, no true."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Only a JSON string: no number turned into one."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _price_field(**kwargs) -> serializers.DecimalField:
    return PriceField(
        max_digits=10,
        decimal_places=2,
        min_value=PRICE_MIN,
        help_text='A positive decimal with at most 2 decimal places, e.g. "19.99" (or a whole '
        "number of units as a JSON integer).",
        **kwargs,
    )


def _stock_field(**kwargs) -> serializers.IntegerField:
    return StrictIntegerField(min_value=0, max_value=STOCK_MAX, **kwargs)


class ProductCreateInputSerializer(serializers.Serializer):
    sku = StrictCharField(
        max_length=64,
        trim_whitespace=False,
        validators=[sku_validator],
    )
    name = StrictCharField(max_length=200)
    price = _price_field()
    stock = _stock_field(help_text="Units on hand.")


class ProductUpdateInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200, required=False)
    price = _price_field(required=False)
    stock = _stock_field(
        required=False, help_text="Units on hand; not below the units reserved right now."
    )


class _CatalogueWrites(APIView):
    # Reads are public; writes need the model permission, as in the admin: POST
    # inventory.add_product, PATCH inventory.change_product (401 without credentials, 403
    # without the permission, is_staff or not). shop/permissions.py has the whole table.
    queryset = Product.objects.all()  # what DjangoModelPermissions reads the model from

    def get_permissions(self):
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return [AllowAny()]
        return [DjangoModelPermissions()]


def _product_or_404(sku: str) -> Product:
    not_found = NotFound(f"No product with sku {sku!r}.")
    try:
        # A sku that cannot exist is not looked up (PostgreSQL refuses NUL characters).
        sku_validator(sku)
        return product_get(sku=sku)
    except (ValidationError, Product.DoesNotExist):
        raise not_found from None


def _product_response(sku: str, status_code: int = status.HTTP_200_OK) -> Response:
    return Response(ProductOutputSerializer(_product_or_404(sku)).data, status=status_code)


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=OpenApiTypes.OBJECT, description=description)


_NOT_FOUND = _error("No product has this sku.")
_WRITE_ERRORS = {
    400: _error("Invalid input: each error in `errors` points at a body field."),
    401: _error("No (or invalid) credentials."),
    403: _error("The user lacks the product permission."),
}


class SkuTaken(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "sku_taken"


def _sku_taken(exc: ValidationError) -> bool:
    errors = exc.error_dict.get("sku", []) if hasattr(exc, "error_dict") else []
    return any(error.code == "unique" for error in errors)


class ProductListApi(_CatalogueWrites):
    @extend_schema(
        operation_id="products_list",
        summary="List the catalogue",
        description="Every product, by sku, with the units available to order. Public.",
        responses={200: ProductOutputSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        return Response(ProductOutputSerializer(product_list(), many=True).data)

    @extend_schema(
        operation_id="products_create",
        summary="Add a product (inventory.add_product)",
        description="Catalogue a new product with its initial stock on hand.",
        request=ProductCreateInputSerializer,
        responses={
            201: ProductOutputSerializer,
            **_WRITE_ERRORS,
            409: _error("A product with this sku exists already."),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = ProductCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            product = product_create(**serializer.validated_data)
        except ValidationError as exc:
            if _sku_taken(exc):
                sku = serializer.validated_data["sku"]
                raise SkuTaken(f"A product with sku {sku!r} already exists.") from None
            raise
        return _product_response(product.sku, status.HTTP_201_CREATED)


class ProductDetailApi(_CatalogueWrites):
    @extend_schema(
        operation_id="products_retrieve",
        summary="Read a product",
        description="One product with the units available to order. Public.",
        responses={200: ProductOutputSerializer, 404: _NOT_FOUND},
    )
    def get(self, request: Request, sku: str) -> Response:
        return _product_response(sku)

    @extend_schema(
        operation_id="products_partial_update",
        summary="Change a product (inventory.change_product)",
        description=(
            "Change any of name, price and stock. Stock sets the units on hand and may not go "
            "below the units reserved for paid orders."
        ),
        request=ProductUpdateInputSerializer,
        responses={
            200: ProductOutputSerializer,
            **_WRITE_ERRORS,
            404: _NOT_FOUND,
        },
    )
    def patch(self, request: Request, sku: str) -> Response:
        _product_or_404(sku)
        serializer = ProductUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            product_update(sku=sku, **serializer.validated_data)
        except Product.DoesNotExist:
            raise NotFound(f"No product with sku {sku!r}.") from None
        return _product_response(sku)

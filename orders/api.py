"""The orders HTTP API: shape the input (types, required fields), call a service or selector,
shape the output. The services decide what an order may be."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
)
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from orders.models import Order
from orders.selectors import order_get_for_user, order_list_for_user, order_timeline
from orders.services import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_LINES,
    MAX_PAYMENT_TOKEN_LENGTH,
    MAX_QUANTITY,
    IdempotencyKeyReused,
    OrderNotCancellable,
    order_cancellation_request,
    order_place,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"


class IdempotencyKeyConflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_key_reused"
    default_detail = (
        "This Idempotency-Key was already used for a different request; "
        "use a new key for a new order."
    )


class IdempotencyKeyInvalid(exceptions.ValidationError):
    parameter_in = "header"  # its keys name request headers (shop/problems.py)


# --- input --------------------------------------------------------------------------------------


class StrictIntegerField(serializers.IntegerField):
    """Only a JSON integer: no "3", no 3.0, no true."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Only a JSON string, taken as sent."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_PAYMENT_TOKEN_LENGTH,
        # not blank, no NUL: what the server checks
        "pattern": "^[^\\x00]*[^\\s\\x00][^\\x00]*$",
    }
)
class PaymentTokenField(StrictCharField):
    pass


# The serializers shape an order request: JSON types and required fields. What an order may be
# (how many lines, which quantities, skus that exist once each, a token of the gateway's
# format) is order_place's to decide, in one place for every caller; its ValidationError is a
# 400 problem document like the serializer's (shop/problems.py). The schema still tells clients
# those limits: the annotations below document them, order_place enforces them.


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY})
class QuantityField(StrictIntegerField):
    pass


class OrderLineInputSerializer(serializers.Serializer):
    sku = StrictCharField(max_length=100, help_text="A catalogued product's sku.")
    quantity = QuantityField()


@extend_schema_field(OrderLineInputSerializer(many=True, allow_empty=False, max_length=MAX_LINES))
class OrderLinesField(serializers.ListField):
    def __init__(self, **kwargs):
        super().__init__(child=OrderLineInputSerializer(), **kwargs)

    def to_internal_value(self, data):
        # Longer than any order may be: order_place refuses it by its count alone, so its
        # lines are not worth shaping (a full-size body would cost seconds of CPU).
        if isinstance(data, list) and len(data) > MAX_LINES:
            return data
        return super().to_internal_value(data)


class OrderPlaceInputSerializer(serializers.Serializer):
    lines = OrderLinesField(help_text="One line per product: each sku at most once.")
    payment_token = PaymentTokenField(
        help_text="The payment method's token: not blank, no NUL character."
    )


def _idempotency_key_get(request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH or not all(
        " " <= char <= "~" for char in key
    ):
        raise IdempotencyKeyInvalid(
            {
                IDEMPOTENCY_HEADER: [
                    f"Must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters."
                ]
            }
        )
    return key


# --- output -------------------------------------------------------------------------------------


class OrderLineOutputSerializer(serializers.Serializer):
    sku = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=10, decimal_places=2)


class PaymentOutputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Order.PaymentStatus.choices)
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)


class ShipmentOutputSerializer(serializers.Serializer):
    status = serializers.CharField()
    carrier = serializers.CharField(allow_null=True)
    tracking_number = serializers.CharField(allow_null=True)


class OrderOutputSerializer(serializers.Serializer):
    id = serializers.CharField(
        source="reference",
        help_text="The order's public reference (ORD-...), as in its URL. Random: it says "
        "nothing about how many orders there are.",
    )
    status = serializers.ChoiceField(choices=Order.Status.choices)
    cancellation_reason = serializers.ChoiceField(
        choices=Order.CancellationReason.choices, allow_null=True
    )
    cancellation_requested_at = serializers.DateTimeField(
        allow_null=True,
        help_text=(
            "When a cancellation was asked for and is being compensated; null once the order "
            "is cancelled or the request was refused (the parcel had left)."
        ),
    )
    lines = OrderLineOutputSerializer(many=True)
    total = serializers.DecimalField(max_digits=12, decimal_places=2)
    payment = serializers.SerializerMethodField()
    shipment = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(PaymentOutputSerializer(allow_null=True))
    def get_payment(self, order: Order):
        if order.payment_status is None:
            return None
        return PaymentOutputSerializer(
            {"status": order.payment_status, "amount": order.payment_amount}
        ).data

    @extend_schema_field(ShipmentOutputSerializer(allow_null=True))
    def get_shipment(self, order: Order):
        if order.shipment_status is None:
            return None
        return ShipmentOutputSerializer(
            {
                "status": order.shipment_status,
                "carrier": order.shipment_carrier,
                "tracking_number": order.shipment_tracking_number,
            }
        ).data


class OrderPageOutputSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = OrderOutputSerializer(many=True)


class TimelineDeliveryOutputSerializer(serializers.Serializer):
    subscriber = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    last_error = serializers.CharField(allow_null=True, help_text="The error's first line.")


class TimelineEventOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    type = serializers.CharField()
    version = serializers.IntegerField()
    occurred_at = serializers.DateTimeField()
    aggregate_type = serializers.CharField()
    aggregate_id = serializers.CharField()
    correlation_id = serializers.UUIDField()
    causation_id = serializers.UUIDField(allow_null=True)
    payload = serializers.JSONField()
    deliveries = TimelineDeliveryOutputSerializer(many=True)


class CustomerTimelineEventOutputSerializer(serializers.Serializer):
    """The timeline as a customer sees it: what happened to the order, and when. Subscribers,
    attempts, errors, payloads and internal ids are the machinery (orders.view_order_machinery).
    """

    type = serializers.CharField()
    occurred_at = serializers.DateTimeField()


# --- views --------------------------------------------------------------------------------------


class OrdersApi(APIView):
    permission_classes = [IsAuthenticated]

    @staticmethod
    def order_get_or_404(request, reference: str) -> Order:
        try:
            return order_get_for_user(user=request.user, reference=reference)
        except Order.DoesNotExist:
            raise exceptions.NotFound("No such order.") from None


class OrderListCreateApi(OrdersApi):
    throttle_scope = "orders"  # placing orders is throttled per user (THROTTLE_RATE_ORDERS)

    @extend_schema(
        operation_id="orders_list",
        summary="Your orders, newest first (with orders.view_any_order: everyone's)",
        parameters=[
            OpenApiParameter(
                "page",
                {"type": "integer", "minimum": 1},
                OpenApiParameter.QUERY,
                description="From 1; 20 orders a page. Past the last page: 404.",
            )
        ],
        responses={200: OrderPageOutputSerializer},
    )
    def get(self, request):
        paginator = api_settings.DEFAULT_PAGINATION_CLASS()
        page = paginator.paginate_queryset(
            order_list_for_user(user=request.user), request, view=self
        )
        return paginator.get_paginated_response(OrderOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="orders_place",
        summary="Place an order",
        description=(
            "Accepts the order at once (202) and starts its saga: payment, stock, shipping. "
            "Poll the order (its Location) or its events to follow it. Repeating a request "
            "with the same Idempotency-Key returns the order it created; reusing the key for "
            "another request is a 409."
        ),
        request=OrderPlaceInputSerializer,
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
                    "pattern": "^[\\x20-\\x7e]+$",
                },
                OpenApiParameter.HEADER,
                required=False,
                description=(
                    f"1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters, unique per "
                    "order you mean to place."
                ),
            ),
            OpenApiParameter(
                "Location",
                OpenApiTypes.URI,
                OpenApiParameter.HEADER,
                response=[202],
                description="The order's absolute URL.",
            ),
        ],
        responses={
            202: OrderOutputSerializer,
            409: OpenApiResponse(description="Idempotency-Key reused for another request."),
        },
        examples=[
            OpenApiExample(
                "Two mugs",
                value={
                    "lines": [{"sku": "MUG-CLASSIC", "quantity": 2}],
                    "payment_token": "tok_visa",
                },
                request_only=True,
            ),
        ],
    )
    def post(self, request):
        idempotency_key = _idempotency_key_get(request)
        serializer = OrderPlaceInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            order, _created = order_place(
                customer=request.user,
                lines=list(data["lines"]),
                payment_token=data["payment_token"],
                idempotency_key=idempotency_key,
            )
        except IdempotencyKeyReused:
            raise IdempotencyKeyConflict() from None
        location = request.build_absolute_uri(
            reverse("orders:order-detail", args=[order.reference])
        )
        return Response(
            OrderOutputSerializer(order).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": location},
        )


class OrderDetailApi(OrdersApi):
    @extend_schema(
        operation_id="orders_retrieve",
        responses={200: OrderOutputSerializer},
    )
    def get(self, request, reference: str):
        return Response(OrderOutputSerializer(self.order_get_or_404(request, reference)).data)


class OrderEventsApi(OrdersApi):
    @extend_schema(
        operation_id="orders_events",
        summary="The order's saga: its events in causal order",
        description=(
            "Each event's type and time. With orders.view_order_machinery (operators), also "
            "its ids, payload and every delivery's subscriber, status, attempts and last error."
        ),
        responses={
            200: PolymorphicProxySerializer(
                component_name="TimelineEvent",
                serializers=[CustomerTimelineEventOutputSerializer, TimelineEventOutputSerializer],
                resource_type_field_name=None,
                many=True,
            ),
        },
    )
    def get(self, request, reference: str):
        order = self.order_get_or_404(request, reference)
        serializer = (
            TimelineEventOutputSerializer
            if request.user.has_perm("orders.view_order_machinery")
            else CustomerTimelineEventOutputSerializer
        )
        return Response(serializer(order_timeline(order=order), many=True).data)


class OrderCancelApi(OrdersApi):
    """The customer's cancellation (or an operator's, with orders.change_order): a separate view,
    so its rules stay in one place."""

    throttle_scope = (
        "orders"  # cancelling is throttled per user with placing (THROTTLE_RATE_ORDERS)
    )

    @extend_schema(
        operation_id="orders_cancel",
        summary="Cancel an order",
        description=(
            "Allowed until the order's parcel is handed to the carrier. Answers 202 at once: "
            "the saga then compensates by events (the shipment is cancelled, the payment "
            "refunded, the stock released) and the order ends `cancelled` with reason "
            "`customer_cancelled`; follow it on the order or its events. Asking again answers "
            "the same way. 409 once the parcel is with the carrier. Another customer's order "
            "needs orders.change_order (and is cancelled `operator_cancelled`)."
        ),
        request=None,
        responses={
            202: OrderOutputSerializer,
            409: OpenApiResponse(description="The parcel was already handed to the carrier."),
        },
    )
    def post(self, request, reference: str):
        order = self.order_get_or_404(request, reference)
        if order.customer_id == request.user.pk:
            reason = Order.CancellationReason.CUSTOMER_CANCELLED
        elif request.user.has_perm("orders.change_order"):
            reason = Order.CancellationReason.OPERATOR_CANCELLED
        else:  # seeing another customer's order (orders.view_any_order) is not cancelling it
            raise exceptions.PermissionDenied(
                "Cancelling another customer's order needs orders.change_order."
            )
        try:
            order = order_cancellation_request(order_id=order.pk, reason=reason)
        except OrderNotCancellable as exc:
            raise OrderNotCancellableConflict(exc.reason) from None
        return Response(OrderOutputSerializer(order).data, status=status.HTTP_202_ACCEPTED)


class OrderNotCancellableConflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "order_not_cancellable"
    default_detail = "The order can no longer be cancelled."

"""The operator's saga console for scripts: the same list and actions as the admin's "Sagas in
flight", with the same permissions (reading it is the saga's machinery,
orders.view_order_machinery; retrying or cancelling is orders.change_order). Kept apart from
orders/api.py, whose views serve customers."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from orders.api import OrderNotCancellableConflict, StrictCharField
from orders.models import Order, order_reference_plausible
from orders.selectors import SAGA_FILTERS, saga_filter, saga_in_flight_queryset, saga_rows
from orders.services import OrderNotCancellable, saga_cancel, saga_retry

MAX_SAGAS = 200


class SagaStepOutputSerializer(serializers.Serializer):
    event_type = serializers.CharField()
    subscriber = serializers.CharField()
    status = serializers.ChoiceField(choices=["pending", "dead"])
    attempts = serializers.IntegerField()
    last_error = serializers.CharField(allow_null=True, help_text="The error's first line.")


class SagaOutputSerializer(serializers.Serializer):
    order_id = serializers.CharField(source="order.reference", help_text="The order's reference.")
    status = serializers.CharField(source="order.status")
    created_at = serializers.DateTimeField(source="order.created_at")
    updated_at = serializers.DateTimeField(source="order.updated_at")
    cancellation_requested_at = serializers.DateTimeField(
        source="order.cancellation_requested_at", allow_null=True
    )
    compensating = serializers.BooleanField()
    dead = serializers.BooleanField(help_text="A delivery of the saga is dead-lettered.")
    waiting_on = SagaStepOutputSerializer(
        allow_null=True, help_text="The oldest delivery not done (a dead letter first)."
    )


class SagaActionInputSerializer(serializers.Serializer):
    # A JSON string only: a number is not a reason (schemathesis found 0 accepted).
    reason = StrictCharField(
        max_length=1000, help_text="Why: kept in the admin's history with who did it."
    )


class SagaRetryOutputSerializer(serializers.Serializer):
    order_id = serializers.CharField(help_text="The order's reference.")
    retried = serializers.IntegerField(help_text="Dead-lettered deliveries made due again.")


class CanOperateSagas(BasePermission):
    """Reading the console needs orders.view_order_machinery, acting on a saga
    orders.change_order: the admin's "Sagas in flight" asks the same."""

    def has_permission(self, request, view) -> bool:
        needed = (
            "orders.view_order_machinery"
            if request.method in SAFE_METHODS
            else "orders.change_order"
        )
        return bool(request.user and request.user.is_authenticated) and request.user.has_perm(
            needed
        )


class SagasApi(APIView):
    permission_classes = [CanOperateSagas]

    @staticmethod
    def saga_get_or_404(reference: str) -> Order:
        if not order_reference_plausible(reference):
            raise exceptions.NotFound("No saga in flight for this order.")
        order = saga_in_flight_queryset().filter(reference=reference).first()
        if order is None:
            raise exceptions.NotFound("No saga in flight for this order.")
        return order

    @staticmethod
    def reason_get(request) -> str:
        serializer = SagaActionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data["reason"]


class SagaListApi(SagasApi):
    @extend_schema(
        operation_id="sagas_list",
        summary="Sagas in flight, oldest first, with the step each waits on (operators)",
        parameters=[
            OpenApiParameter(
                "state",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                enum=list(SAGA_FILTERS),
                description="stuck (no progress for ORDERS_STUCK_AFTER_SECONDS), dead "
                "(a dead-lettered delivery) or compensating.",
            )
        ],
        responses={200: SagaOutputSerializer(many=True)},
    )
    def get(self, request):
        orders = saga_in_flight_queryset()
        state = request.query_params.get("state")
        if state is not None:
            if state not in SAGA_FILTERS:
                raise exceptions.ValidationError({"state": [f"One of: {', '.join(SAGA_FILTERS)}."]})
            orders = saga_filter(orders, state=state)
        rows = saga_rows(list(orders[:MAX_SAGAS]))
        return Response(SagaOutputSerializer(rows, many=True).data)


class SagaRetryApi(SagasApi):
    @extend_schema(
        operation_id="sagas_retry",
        summary="Retry the saga's dead-lettered steps (orders.change_order)",
        request=SagaActionInputSerializer,
        responses={
            200: SagaRetryOutputSerializer,
        },
    )
    def post(self, request, reference: str):
        order = self.saga_get_or_404(reference)
        reason = self.reason_get(request)
        try:
            retried = saga_retry(order_id=order.pk, user=request.user, reason=reason)
        except ValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict) from None
        return Response({"order_id": order.reference, "retried": retried})


class SagaCancelApi(SagasApi):
    @extend_schema(
        operation_id="sagas_cancel",
        summary="Cancel the order with compensation (orders.change_order)",
        description="As the customer's cancel, with reason operator_cancelled: 202, then the "
        "saga compensates. 409 once the parcel is with the carrier.",
        request=SagaActionInputSerializer,
        responses={
            202: SagaOutputSerializer,
            409: OpenApiResponse(description="The parcel was already handed to the carrier."),
        },
    )
    def post(self, request, reference: str):
        order = self.saga_get_or_404(reference)
        reason = self.reason_get(request)
        try:
            order = saga_cancel(order_id=order.pk, user=request.user, reason=reason)
        except OrderNotCancellable as exc:
            raise OrderNotCancellableConflict(exc.reason) from None
        except ValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict) from None
        return Response(
            SagaOutputSerializer(saga_rows([order])[0]).data, status=status.HTTP_202_ACCEPTED
        )

"""What payments does when other apps' events arrive. Each handler runs in its own transaction
with its delivery record; calling one twice for the same event changes nothing the second time.
"""

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError

from inventory.events import StockNotAvailable
from orders.events import OrderPlaced
from outbox import subscribe
from payments.services import (
    payment_cancel,
    payment_charge,
    payment_charge_prepare,
    payment_refund,
    payment_refund_prepare,
)
from shipping.events import ShipmentCancelled


def _amount(event: OrderPlaced) -> Decimal:
    try:
        return Decimal(event.total)
    except InvalidOperation:
        raise ValidationError(
            f"OrderPlaced for order {event.order_id}: total {event.total!r} is not a decimal"
        ) from None


def _charge_prepare(event: OrderPlaced) -> None:
    payment_charge_prepare(
        order_id=event.order_id, amount=_amount(event), currency=event.currency, lines=event.lines
    )


def _refund_prepare(event: StockNotAvailable | ShipmentCancelled) -> None:
    payment_refund_prepare(order_id=event.order_id)


# prepare=: the gateway call is recorded, in a transaction that commits, before each run
# (payments/services.py says why).
@subscribe(OrderPlaced, prepare=_charge_prepare)
def payment_charge_on_order_placed(event: OrderPlaced) -> None:
    payment_charge(
        order_id=event.order_id,
        amount=_amount(event),
        currency=event.currency,
        token=event.payment_token,
        lines=event.lines,
    )


@subscribe(StockNotAvailable, prepare=_refund_prepare)
def payment_refund_on_stock_not_available(event: StockNotAvailable) -> None:
    payment_refund(order_id=event.order_id)


@subscribe(ShipmentCancelled, prepare=_refund_prepare)
def payment_cancel_on_shipment_cancelled(event: ShipmentCancelled) -> None:
    payment_cancel(order_id=event.order_id)

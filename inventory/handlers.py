"""What inventory does when other apps' events arrive. Each handler runs in its own transaction
with its delivery record; the services are idempotent per order, so a second delivery of the
same event (or another event for the same order) changes nothing.
"""

from inventory.services import stock_fulfil, stock_release, stock_reserve
from outbox import subscribe
from payments.events import PaymentCompleted
from shipping.events import ShipmentCancelled, ShippingScheduled


@subscribe(PaymentCompleted)
def stock_reserve_on_payment_completed(event: PaymentCompleted) -> None:
    stock_reserve(order_id=event.order_id, lines=event.lines)


@subscribe(ShippingScheduled)
def stock_fulfil_on_shipping_scheduled(event: ShippingScheduled) -> None:
    stock_fulfil(order_id=event.order_id)


@subscribe(ShipmentCancelled)
def stock_release_on_shipment_cancelled(event: ShipmentCancelled) -> None:
    stock_release(order_id=event.order_id)

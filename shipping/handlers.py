"""What shipping does when other apps' events arrive. Each handler runs in its own transaction
with its delivery record; the services are idempotent per order, so a second delivery
changes nothing.
"""

from inventory.events import StockUpdated
from orders.events import OrderCancellationRequested
from outbox import subscribe
from shipping.services import shipment_cancel, shipment_schedule


@subscribe(StockUpdated)
def shipment_schedule_on_stock_updated(event: StockUpdated) -> None:
    shipment_schedule(order_id=event.order_id, lines=event.lines, correlation_id=_saga(event))


@subscribe(OrderCancellationRequested)
def shipment_cancel_on_order_cancellation_requested(event: OrderCancellationRequested) -> None:
    shipment_cancel(order_id=event.order_id, reason=event.reason, correlation_id=_saga(event))


def _saga(event):
    # The saga's id, kept with the shipment for the events an operator's step publishes later.
    return event.meta.correlation_id if event.meta else None

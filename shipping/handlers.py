"""What shipping does when other apps' events arrive. Each handler runs in its own transaction
with its delivery record; shipment_schedule is idempotent per order, so a second delivery
changes nothing.
"""

from inventory.events import StockUpdated
from outbox import subscribe
from shipping.services import shipment_schedule


@subscribe(StockUpdated)
def shipment_schedule_on_stock_updated(event: StockUpdated) -> None:
    shipment_schedule(order_id=event.order_id, lines=event.lines)

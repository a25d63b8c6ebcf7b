"""How orders reacts to the saga's events: one small function per event, each calling a service.

Deliveries to different subscribers arrive in any order, so the services only ever move an
order forward and publish OrderCompleted / OrderCancelled on the transition alone.
"""

from decimal import Decimal

from inventory.events import ProductCatalogued, StockUpdated
from orders.models import Order
from orders.services import (
    catalog_item_upsert,
    order_cancel,
    order_cancel_compensated,
    order_cancellation_refuse,
    order_complete,
    order_mark_paid,
    order_mark_stock_reserved,
    order_shipment_progress,
)
from outbox import subscribe
from payments.events import PaymentCompleted, PaymentFailed, PaymentRefunded
from shipping.events import (
    ShipmentCancellationRefused,
    ShipmentCancelled,
    ShipmentDelivered,
    ShipmentHandedToCarrier,
    ShippingScheduled,
)


@subscribe(PaymentCompleted)
def order_mark_paid_on_payment_completed(event: PaymentCompleted) -> None:
    order_mark_paid(order_id=event.order_id, amount=Decimal(event.amount))


@subscribe(StockUpdated)
def order_mark_stock_reserved_on_stock_updated(event: StockUpdated) -> None:
    order_mark_stock_reserved(order_id=event.order_id)


@subscribe(ShippingScheduled)
def order_complete_on_shipping_scheduled(event: ShippingScheduled) -> None:
    order_complete(
        order_id=event.order_id, carrier=event.carrier, tracking_number=event.tracking_number
    )


@subscribe(PaymentFailed)
def order_cancel_on_payment_failed(event: PaymentFailed) -> None:
    order_cancel(
        order_id=event.order_id,
        reason=Order.CancellationReason.PAYMENT_FAILED,
        payment_status=Order.PaymentStatus.FAILED,
    )


@subscribe(PaymentRefunded)
def order_cancel_on_payment_refunded(event: PaymentRefunded) -> None:
    order_cancel(
        order_id=event.order_id,
        reason=Order.CancellationReason.OUT_OF_STOCK,
        payment_status=Order.PaymentStatus.REFUNDED,
        payment_amount=Decimal(event.amount),
    )


@subscribe(ShipmentCancelled)
def order_cancel_compensated_on_shipment_cancelled(event: ShipmentCancelled) -> None:
    order_cancel_compensated(order_id=event.order_id, reason=event.reason)


@subscribe(ShipmentCancellationRefused)
def order_cancellation_refuse_on_shipment_cancellation_refused(
    event: ShipmentCancellationRefused,
) -> None:
    order_cancellation_refuse(order_id=event.order_id, shipment_status=event.status)


@subscribe(ShipmentHandedToCarrier)
def order_shipment_progress_on_shipment_handed_to_carrier(event: ShipmentHandedToCarrier) -> None:
    order_shipment_progress(order_id=event.order_id, shipment_status="handed_to_carrier")


@subscribe(ShipmentDelivered)
def order_shipment_progress_on_shipment_delivered(event: ShipmentDelivered) -> None:
    order_shipment_progress(order_id=event.order_id, shipment_status="delivered")


# ordered: a product's updates are applied in the order inventory published them.
@subscribe(ProductCatalogued, ordered=True)
def catalog_update_on_product_catalogued(event: ProductCatalogued) -> None:
    catalog_item_upsert(sku=event.sku, name=event.name, price=event.price, currency=event.currency)

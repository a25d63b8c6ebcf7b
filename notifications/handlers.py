"""What notifications reacts to: the order events a customer hears about."""

from notifications.models import Notification
from notifications.services import notification_send
from orders.events import OrderCancelled, OrderCompleted, OrderPlaced
from outbox import subscribe


@subscribe(OrderPlaced)
def notification_on_order_placed(event: OrderPlaced) -> None:
    notification_send(
        event_id=event.meta.event_id,
        kind=Notification.Kind.ORDER_PLACED,
        order_id=event.order_id,
        order_reference=event.order_reference,
        recipient=event.customer_email,
    )


@subscribe(OrderCompleted)
def notification_on_order_completed(event: OrderCompleted) -> None:
    notification_send(
        event_id=event.meta.event_id,
        kind=Notification.Kind.ORDER_COMPLETED,
        order_id=event.order_id,
        order_reference=event.order_reference,
        recipient=event.customer_email,
    )


@subscribe(OrderCancelled)
def notification_on_order_cancelled(event: OrderCancelled) -> None:
    notification_send(
        event_id=event.meta.event_id,
        kind=Notification.Kind.ORDER_CANCELLED,
        order_id=event.order_id,
        order_reference=event.order_reference,
        recipient=event.customer_email,
        reason=event.reason,
    )

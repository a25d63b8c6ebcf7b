"""Emailing customers about their orders, once per order event.

``notification_send`` runs inside the handler's transaction (the one that also marks the
event's delivery done). It records the notification first, unique on the event's id, and hands
the message to the mail server last, just before that transaction commits:

- a redelivered or replayed event finds its row and sends nothing;
- a mail server that refuses or cannot be reached raises: the row is rolled back with the rest,
  and the delivery is retried with backoff, then dead-lettered (the outbox's usual path);
- the one gap is a crash (or a failed COMMIT) after the server accepted the message and before
  the commit: the delivery runs again and the customer gets the same message a second time.
  SMTP offers no transaction to close it; the message's ``Message-ID`` is derived from the
  event's id, so the two copies are the same message to any client or server that deduplicates.
"""

from __future__ import annotations

import uuid
from email.utils import parseaddr

from django.conf import settings
from django.core.mail import EmailMessage

from notifications.models import Notification
from outbox import atomic, insert_or_nothing

CANCELLATION_REASONS = {
    "payment_failed": "the payment was declined, so nothing was charged",
    "out_of_stock": "some of its items are out of stock; your payment has been refunded",
    "customer_cancelled": "as you asked; any payment has been refunded",
    "timed_out": "it could not be completed in time; any payment has been refunded",
    "operator_cancelled": "by our staff; any payment has been refunded",
}


def message_compose(*, kind: str, order_reference: str, reason: str = "") -> tuple[str, str]:
    """The subject and body of the email for an order event, naming the order by its number."""
    order = f"order {order_reference}" if order_reference else "order"
    if kind == Notification.Kind.ORDER_PLACED:
        return (
            f"We received your {order}",
            f"Thank you for your {order}. We are taking your payment and preparing it; "
            "we will write again when it is on its way.\n",
        )
    if kind == Notification.Kind.ORDER_COMPLETED:
        return (
            f"Your {order} is on its way",
            f"Your {order} is paid and its shipment is scheduled with the carrier.\n",
        )
    if kind == Notification.Kind.ORDER_CANCELLED:
        why = CANCELLATION_REASONS.get(reason, "any payment has been refunded")
        return (f"Your {order} is cancelled", f"Your {order} is cancelled: {why}.\n")
    raise ValueError(f"unknown notification kind {kind!r}")


def message_id_for(event_id: uuid.UUID) -> str:
    """The same Message-ID for every attempt at one event's email."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
    return f"<{event_id}.notification@{domain}>"


@atomic
def notification_send(
    *,
    event_id: uuid.UUID,
    kind: str,
    order_id: int,
    order_reference: str,
    recipient: str,
    reason: str = "",
) -> tuple[Notification, bool]:
    """Email ``recipient`` about an order event, unless this event was answered already;
    returns (the notification, whether a message was sent now)."""
    subject, body = message_compose(kind=kind, order_reference=order_reference, reason=reason)
    notification = Notification(
        event_id=event_id,
        kind=kind,
        order_id=order_id,
        order_reference=order_reference,
        recipient=recipient,
        subject=subject,
        message_id=message_id_for(event_id),
        status=Notification.Status.SENT if recipient else Notification.Status.NO_ADDRESS,
    )
    # One statement: the row is written unless this event's row exists (unique on event_id).
    if not insert_or_nothing(notification):
        return Notification.objects.get(event_id=event_id), False
    if not recipient:
        return notification, False
    # Last, so that nothing after it can roll the record back once the server has the message.
    EmailMessage(
        subject=subject,
        body=body,
        to=[recipient],
        headers={"Message-ID": notification.message_id},
    ).send()
    return notification, True

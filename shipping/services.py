"""Writes of the shipping app."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Protocol

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from outbox import atomic, insert_or_nothing, publish
from shipping.events import (
    ShipmentCancellationRefused,
    ShipmentCancelled,
    ShipmentDelivered,
    ShipmentHandedToCarrier,
    ShippingScheduled,
)
from shipping.models import Shipment

# (carrier, tracking number prefix). An order always gets the same carrier.
CARRIERS: tuple[tuple[str, str], ...] = (("DHL", "DHL"), ("UPS", "1Z"), ("DPD", "DPD"))
_TRACKING_ATTEMPTS = 3


class ShipmentLine(Protocol):
    """What goes in the parcel (inventory.events.ReservedLine has it; a dict too)."""

    sku: str
    quantity: int


@atomic
def shipment_schedule(
    *, order_id: int, lines: Iterable[ShipmentLine], correlation_id: uuid.UUID | None = None
) -> Shipment:
    """Schedule the order's shipment with a carrier; publish ShippingScheduled.

    Idempotent per order: when the order already has a shipment it is returned and nothing is
    published again; that includes a shipment cancelled before it was scheduled, so a
    StockUpdated that arrives after the order's cancellation schedules nothing.
    """
    lines = _lines_validate(order_id=order_id, lines=lines)
    # No read first: the insert finds an existing shipment (a duplicate delivery, or one
    # cancelled before it was scheduled) by the order's uniqueness, below, for one statement
    # less on every first delivery.
    carrier, prefix = carrier_for(order_id=order_id)
    for attempt in range(1, _TRACKING_ATTEMPTS + 1):
        shipment = Shipment(
            order_id=order_id,
            carrier=carrier,
            tracking_number=_tracking_number(prefix),
            lines=lines,
            correlation_id=correlation_id,
        )
        if insert_or_nothing(shipment):
            break
        # The order has its shipment already (or a concurrent duplicate committed first): that
        # one is the shipment.
        existing = Shipment.objects.filter(order_id=order_id).first()
        if existing is not None:
            return existing
        if attempt == _TRACKING_ATTEMPTS:  # not a tracking-number clash after all
            raise IntegrityError(
                f"order {order_id}'s shipment conflicts with no row ({attempt} tracking numbers)"
            )

    publish(
        ShippingScheduled(
            shipment_id=shipment.pk,
            order_id=order_id,
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
        )
    )
    return shipment


class ShipmentTransitionRefused(Exception):
    """The shipment is not in the status the step starts from; nothing was changed."""


@atomic
def shipment_cancel(
    *, order_id: int, reason: str, correlation_id: uuid.UUID | None = None
) -> Shipment:
    """Cancel the order's shipment, or make sure none will be scheduled; shipping is the
    cancellation's arbiter, because only it knows whether the parcel left.

    Publishes ShipmentCancelled (the other apps then compensate) or, when the parcel is already
    with the carrier, ShipmentCancellationRefused. Idempotent: a cancelled shipment is returned
    and nothing is published again.
    """
    if not isinstance(order_id, int) or isinstance(order_id, bool) or order_id < 1:
        raise ValidationError({"order_id": [f"must be a positive integer, got {order_id!r}"]})
    shipment = Shipment.objects.select_for_update().filter(order_id=order_id).first()
    if shipment is None:
        try:
            # The unique order_id makes a concurrent shipment_schedule and this insert queue:
            # whichever commits second finds the other's row.
            with transaction.atomic():
                shipment = Shipment.objects.create(
                    order_id=order_id,
                    status=Shipment.Status.CANCELLED,
                    lines=[],
                    correlation_id=correlation_id,
                )
        except IntegrityError:
            shipment = Shipment.objects.select_for_update().get(order_id=order_id)
        else:
            _cancelled_publish(shipment, reason=reason)
            return shipment
    if shipment.status == Shipment.Status.CANCELLED:
        return shipment
    if shipment.status == Shipment.Status.SCHEDULED:
        shipment.status = Shipment.Status.CANCELLED
        shipment.save(update_fields=["status", "updated_at"])
        _cancelled_publish(shipment, reason=reason)
        return shipment
    publish(
        ShipmentCancellationRefused(
            shipment_id=shipment.pk, order_id=order_id, status=shipment.status
        )
    )
    return shipment


def _cancelled_publish(shipment: Shipment, *, reason: str) -> None:
    publish(ShipmentCancelled(shipment_id=shipment.pk, order_id=shipment.order_id, reason=reason))


@transaction.atomic
def shipment_hand_to_carrier(*, shipment_id: int) -> Shipment:
    """The operator hands the parcel to the carrier; publish ShipmentHandedToCarrier.

    Only from ``scheduled``, re-checked on the locked row: a shipment cancelled a moment ago
    raises ShipmentTransitionRefused and stays cancelled.
    """
    return _shipment_advance(
        shipment_id=shipment_id,
        source=Shipment.Status.SCHEDULED,
        target=Shipment.Status.HANDED_TO_CARRIER,
        event=lambda s: ShipmentHandedToCarrier(
            shipment_id=s.pk,
            order_id=s.order_id,
            carrier=s.carrier,
            tracking_number=s.tracking_number or "",
        ),
    )


@transaction.atomic
def shipment_deliver(*, shipment_id: int) -> Shipment:
    """The carrier delivered the parcel; publish ShipmentDelivered. Only from handed_to_carrier."""
    return _shipment_advance(
        shipment_id=shipment_id,
        source=Shipment.Status.HANDED_TO_CARRIER,
        target=Shipment.Status.DELIVERED,
        event=lambda s: ShipmentDelivered(shipment_id=s.pk, order_id=s.order_id),
    )


def _shipment_advance(*, shipment_id: int, source: str, target: str, event) -> Shipment:
    shipment = Shipment.objects.select_for_update().get(pk=shipment_id)
    if shipment.status != source:
        raise ShipmentTransitionRefused(
            f"shipment of order {shipment.order_id} is {shipment.status}, not {source}: "
            f"it cannot become {target}"
        )
    shipment.status = target
    shipment.save(update_fields=["status", "updated_at"])
    publish(event(shipment), correlation_id=shipment.correlation_id)
    return shipment


def carrier_for(*, order_id: int) -> tuple[str, str]:
    """The carrier and its tracking prefix: spread over the carriers, the same for an order."""
    return CARRIERS[order_id % len(CARRIERS)]


def _tracking_number(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().int % 10**16:016d}"


def _lines_validate(*, order_id: int, lines: Iterable[ShipmentLine]) -> list[dict]:
    errors: dict[str, list[str]] = {}
    if not isinstance(order_id, int) or isinstance(order_id, bool) or order_id < 1:
        errors.setdefault("order_id", []).append(f"must be a positive integer, got {order_id!r}")
    cleaned = []
    lines = list(lines)
    if not lines:
        errors.setdefault("lines", []).append("a shipment has at least one line")
    for i, line in enumerate(lines):
        if isinstance(line, Mapping):
            sku, quantity = line.get("sku"), line.get("quantity")
        else:
            sku, quantity = getattr(line, "sku", None), getattr(line, "quantity", None)
        if not isinstance(sku, str) or not sku:
            errors.setdefault("lines", []).append(f"line {i}: sku must be a non-empty string")
        elif not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            errors.setdefault("lines", []).append(
                f"line {i}: quantity must be a positive integer, got {quantity!r}"
            )
        else:
            cleaned.append({"sku": sku, "quantity": quantity})
    if errors:
        raise ValidationError(errors)
    return cleaned

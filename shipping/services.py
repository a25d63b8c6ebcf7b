"""Writes of the shipping app."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Protocol

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from outbox import publish
from shipping.events import ShippingScheduled
from shipping.models import Shipment

# (carrier, tracking number prefix). An order always gets the same carrier.
CARRIERS: tuple[tuple[str, str], ...] = (("DHL", "DHL"), ("UPS", "1Z"), ("DPD", "DPD"))
_TRACKING_ATTEMPTS = 3


class ShipmentLine(Protocol):
    """What goes in the parcel (inventory.events.ReservedLine has it; a dict too)."""

    sku: str
    quantity: int


@transaction.atomic
def shipment_schedule(*, order_id: int, lines: Iterable[ShipmentLine]) -> Shipment:
    """Schedule the order's shipment with a carrier; publish ShippingScheduled.

    Idempotent per order: when the order already has a shipment it is returned and nothing is
    published again.
    """
    lines = _lines_validate(order_id=order_id, lines=lines)
    existing = Shipment.objects.filter(order_id=order_id).first()
    if existing is not None:
        return existing

    carrier, prefix = carrier_for(order_id=order_id)
    for attempt in range(1, _TRACKING_ATTEMPTS + 1):
        shipment = Shipment(
            order_id=order_id,
            carrier=carrier,
            tracking_number=_tracking_number(prefix),
            lines=lines,
        )
        try:
            with transaction.atomic():
                shipment.save()
            break
        except IntegrityError:
            # A concurrent duplicate for this order committed first: its shipment is the one.
            existing = Shipment.objects.filter(order_id=order_id).first()
            if existing is not None:
                return existing
            if attempt == _TRACKING_ATTEMPTS:  # not a tracking-number clash after all
                raise

    publish(
        ShippingScheduled(
            shipment_id=shipment.pk,
            order_id=order_id,
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
        )
    )
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

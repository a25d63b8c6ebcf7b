"""Reads of the shipping app."""

from shipping.models import Shipment


def shipment_get(*, order_id: int) -> Shipment | None:
    return Shipment.objects.filter(order_id=order_id).first()

"""Events the shipping app publishes. Other apps import this module and nothing else of it."""

from dataclasses import dataclass
from typing import ClassVar

from outbox import DomainEvent


@dataclass(frozen=True, kw_only=True)
class ShippingScheduled(DomainEvent):
    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "shipment"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus

    shipment_id: int
    order_id: int
    carrier: str
    tracking_number: str


@dataclass(frozen=True, kw_only=True)
class ShipmentHandedToCarrier(DomainEvent):
    """The parcel left with the carrier: the point of no return for a cancellation."""

    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "shipment"

    shipment_id: int
    order_id: int
    carrier: str
    tracking_number: str


@dataclass(frozen=True, kw_only=True)
class ShipmentDelivered(DomainEvent):
    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "shipment"

    shipment_id: int
    order_id: int


@dataclass(frozen=True, kw_only=True)
class ShipmentCancelled(DomainEvent):
    """The order will not ship: its scheduled shipment is cancelled, or none will be scheduled.

    The signal for the other apps to compensate: refund, release the stock.
    """

    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "shipment"
    externalised: ClassVar[bool] = True  # a saga event: payments refunds on it, in its service

    shipment_id: int
    order_id: int
    reason: str  # the cancellation's reason, as OrderCancellationRequested gave it


@dataclass(frozen=True, kw_only=True)
class ShipmentCancellationRefused(DomainEvent):
    """The order cannot be cancelled any more: its parcel is already with the carrier."""

    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "shipment"

    shipment_id: int
    order_id: int
    status: str  # "handed_to_carrier" or "delivered"

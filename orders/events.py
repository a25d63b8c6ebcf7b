"""Events the orders app publishes. Other apps import this module and nothing else of orders."""

from dataclasses import dataclass
from typing import ClassVar

from outbox import DomainEvent


@dataclass(frozen=True, kw_only=True)
class PlacedLine:
    sku: str
    quantity: int
    unit_price: str  # a decimal as a string, e.g. "19.99"


@dataclass(frozen=True, kw_only=True)
class OrderPlaced(DomainEvent):
    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "order"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus
    sensitive: ClassVar[tuple[str, ...]] = ("payment_token",)  # sealed; docs/outbox.md

    order_id: int
    customer_id: int
    lines: tuple[PlacedLine, ...]
    total: str
    currency: str
    payment_token: str


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(DomainEvent):
    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "order"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus

    order_id: int
    # "payment_failed", "out_of_stock", "customer_cancelled", "timed_out" or "operator_cancelled"
    reason: str


@dataclass(frozen=True, kw_only=True)
class OrderCompleted(DomainEvent):
    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "order"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus

    order_id: int


@dataclass(frozen=True, kw_only=True)
class OrderCancellationRequested(DomainEvent):
    """The customer, an operator or a deadline asked to cancel the order: compensate.

    Shipping answers first (ShipmentCancelled, or ShipmentCancellationRefused once the parcel is
    with the carrier); the other apps compensate on ShipmentCancelled.
    """

    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "order"

    order_id: int
    reason: str  # "customer_cancelled", "timed_out" or "operator_cancelled"

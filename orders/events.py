"""Events the orders app publishes. Other apps import this module and nothing else of orders."""

from dataclasses import dataclass
from typing import ClassVar

from outbox import DomainEvent, upcaster

# Version 2 of OrderPlaced, OrderCompleted and OrderCancelled carries what a customer-facing
# subscriber needs without reading orders' tables: the order's public reference (ORD-...) and
# the customer's email address ("" when the customer gave none). Events stored at version 1 did
# not carry them; their upcasters fill in "" (unknown), which a subscriber treats like a customer
# with no address. The address is personal data: ``customer_email`` is declared sensitive, so it
# is sealed in the event store and on the bus and redacted wherever people read events.


@dataclass(frozen=True, kw_only=True)
class PlacedLine:
    sku: str
    quantity: int
    unit_price: str  # a decimal as a string, e.g. "19.99"


@dataclass(frozen=True, kw_only=True)
class OrderPlaced(DomainEvent):
    version: ClassVar[int] = 2
    aggregate_type: ClassVar[str] = "order"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus
    # Sealed in the store and on the bus, redacted where people read (docs/outbox.md).
    sensitive: ClassVar[tuple[str, ...]] = ("payment_token", "customer_email")

    order_id: int
    order_reference: str  # "ORD-..." ("" in events stored at v1)
    customer_email: str  # "" when the customer has none (and in events stored at v1)
    customer_id: int
    lines: tuple[PlacedLine, ...]
    total: str
    currency: str
    payment_token: str


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(DomainEvent):
    version: ClassVar[int] = 2
    aggregate_type: ClassVar[str] = "order"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus
    sensitive: ClassVar[tuple[str, ...]] = ("customer_email",)

    order_id: int
    order_reference: str
    customer_email: str
    # "payment_failed", "out_of_stock", "customer_cancelled", "timed_out" or "operator_cancelled"
    reason: str


@dataclass(frozen=True, kw_only=True)
class OrderCompleted(DomainEvent):
    version: ClassVar[int] = 2
    aggregate_type: ClassVar[str] = "order"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus
    sensitive: ClassVar[tuple[str, ...]] = ("customer_email",)

    order_id: int
    order_reference: str
    customer_email: str


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


def _customer_facts_unknown(payload: dict) -> dict:
    """v1 -> v2: a v1 event did not carry the reference or the address; "" says unknown."""
    return {**payload, "order_reference": "", "customer_email": ""}


for _event in (OrderPlaced, OrderCompleted, OrderCancelled):
    upcaster(_event, from_version=1)(_customer_facts_unknown)

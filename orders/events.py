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
    reason: str  # "payment_failed" or "out_of_stock"


@dataclass(frozen=True, kw_only=True)
class OrderCompleted(DomainEvent):
    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "order"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus

    order_id: int

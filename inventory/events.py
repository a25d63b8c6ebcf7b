"""Events the inventory app publishes. Other apps import this module and nothing else of it."""

from dataclasses import dataclass
from typing import ClassVar

from outbox import DomainEvent


@dataclass(frozen=True, kw_only=True)
class ReservedLine:
    sku: str
    quantity: int


@dataclass(frozen=True, kw_only=True)
class ShortLine:
    sku: str
    requested: int
    available: int


@dataclass(frozen=True, kw_only=True)
class StockUpdated(DomainEvent):
    """Every line of the order is reserved."""

    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "reservation"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus

    reservation_id: int
    order_id: int
    lines: tuple[ReservedLine, ...]


@dataclass(frozen=True, kw_only=True)
class StockNotAvailable(DomainEvent):
    """At least one line could not be reserved, so none was."""

    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "reservation"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus

    reservation_id: int
    order_id: int
    short: tuple[ShortLine, ...]


@dataclass(frozen=True, kw_only=True)
class StockReleased(DomainEvent):
    """A cancelled order's stock is available again: its reservation released, or the goods
    of a scheduled shipment put back on the shelf (``restocked``)."""

    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "reservation"

    reservation_id: int
    order_id: int
    lines: tuple[ReservedLine, ...]
    restocked: bool


@dataclass(frozen=True, kw_only=True)
class ProductCatalogued(DomainEvent):
    """A product's sellable facts, as they are now: sent when it is created and whenever its
    name or price changes. Orders keeps its own catalogue from these to price new orders."""

    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "product"

    sku: str
    name: str
    price: str  # a decimal as a string, e.g. "19.99"
    currency: str

    @property
    def aggregate_id(self) -> str:
        return self.sku

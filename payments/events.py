"""Events the payments app publishes. Other apps import this module and nothing else of it."""

from dataclasses import dataclass
from typing import ClassVar

from outbox import DomainEvent


@dataclass(frozen=True, kw_only=True)
class PaidLine:
    sku: str
    quantity: int


@dataclass(frozen=True, kw_only=True)
class PaymentCompleted(DomainEvent):
    """The order's amount was captured. Carries the lines so inventory can reserve them."""

    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "payment"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus

    payment_id: int
    order_id: int
    amount: str
    currency: str
    lines: tuple[PaidLine, ...]


@dataclass(frozen=True, kw_only=True)
class PaymentFailed(DomainEvent):
    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "payment"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus

    payment_id: int
    order_id: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class PaymentRefunded(DomainEvent):
    version: ClassVar[int] = 1
    aggregate_type: ClassVar[str] = "payment"
    externalised: ClassVar[bool] = True  # a saga event: published to the bus

    payment_id: int
    refund_id: int
    order_id: int
    amount: str
    currency: str

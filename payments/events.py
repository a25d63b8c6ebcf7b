"""Events the payments app publishes. Other apps import this module and nothing else of it."""

import re
from dataclasses import dataclass
from typing import ClassVar

from outbox import DomainEvent

# What a payment token looks like: the gateway's own format ("tok_" and letters or digits, as
# Stripe's tokens and payments/gateway.py's test tokens are). Part of payments' public surface
# because orders takes the token from the customer and must refuse anything else before it is
# stored: card data never enters the shop.
PAYMENT_TOKEN_MAX_LENGTH = 255
PAYMENT_TOKEN_RE = re.compile(rf"tok_[A-Za-z0-9]{{1,{PAYMENT_TOKEN_MAX_LENGTH - 4}}}")
# Twelve to nineteen digits, each pair at most one space or dash apart: a card number (PAN).
CARD_NUMBER_RE = re.compile(r"(?:[0-9][ -]?){11,18}[0-9]")


def payment_token_problem(token: str) -> str | None:
    """Why ``token`` is not a payment token the gateway could have issued, or None."""
    if CARD_NUMBER_RE.search(token):
        return (
            "This looks like a card number. Send the token your payment form got from the "
            "gateway (tok_...), never the card's details."
        )
    if not PAYMENT_TOKEN_RE.fullmatch(token):
        return (
            "A payment token is the gateway's token: tok_ followed by letters and digits, "
            f"at most {PAYMENT_TOKEN_MAX_LENGTH} characters."
        )
    return None


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

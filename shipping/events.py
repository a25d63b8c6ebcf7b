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

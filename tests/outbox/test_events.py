"""Declaring, encoding and decoding events; upcasting stored versions."""

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

import pytest

from outbox import DomainEvent, EventDeclarationError, EventPayloadError, UnknownEventType
from outbox.errors import UpcastError
from outbox.events import EventMeta, event_type_get, payload_upcast, upcaster
from tests.testapp.events import Reshaped, Stranded, ThingHappened


def test_type_name_defaults_to_app_and_class():
    assert ThingHappened.event_type == "tests.ThingHappened"
    assert event_type_get("tests.ThingHappened") is ThingHappened


def test_payload_round_trip_with_nested_lines():
    from orders.events import OrderPlaced, PlacedLine

    event = OrderPlaced(
        order_id=7,
        order_reference="ORD-ABCDEFGHJKMN",
        customer_email="alice@example.com",
        customer_id=3,
        lines=(PlacedLine(sku="MUG", quantity=2, unit_price="9.50"),),
        total="19.00",
        currency="EUR",
        payment_token="tok_visa",
    )
    payload = event.to_payload()
    assert payload["lines"] == [{"sku": "MUG", "quantity": 2, "unit_price": "9.50"}]
    assert OrderPlaced.from_payload(payload) == event
    assert event.aggregate_id == "7"


def test_decimal_in_payload_is_a_clear_error():
    @dataclass(frozen=True, kw_only=True)
    class PriceSet(DomainEvent):
        aggregate_type: ClassVar[str] = "price"
        price_id: int
        amount: object

    with pytest.raises(EventPayloadError, match=r"amount: Decimal is not JSON-serialisable"):
        PriceSet(price_id=1, amount=Decimal("1.5")).to_payload()


def test_wrong_field_type_is_rejected_on_encode_and_decode():
    with pytest.raises(EventPayloadError, match=r"seq: expected int"):
        ThingHappened(thing_id="x", seq="3").to_payload()
    with pytest.raises(EventPayloadError, match=r"seq: expected int"):
        ThingHappened.from_payload({"thing_id": "x", "seq": "three"})


def test_unknown_and_missing_fields_are_rejected_on_decode():
    with pytest.raises(EventPayloadError, match=r"missing thing_id; unknown colour"):
        ThingHappened.from_payload({"colour": "red"})
    with pytest.raises(EventPayloadError, match="payload must be an object"):
        ThingHappened.from_payload(["not", "a", "dict"])


def test_event_class_must_be_a_frozen_dataclass():
    class NotADataclass(DomainEvent):
        aggregate_type: ClassVar[str] = "x"

    with pytest.raises(EventDeclarationError, match="must be decorated with @dataclass"):
        NotADataclass().to_payload()


def test_event_class_needs_an_aggregate_type():
    with pytest.raises(EventDeclarationError, match="must declare aggregate_type"):

        @dataclass(frozen=True, kw_only=True)
        class Homeless(DomainEvent):
            x: int


def test_a_type_name_cannot_be_declared_twice():
    with pytest.raises(EventDeclarationError, match="declared twice"):

        @dataclass(frozen=True, kw_only=True)
        class Impostor(DomainEvent):
            event_type: ClassVar[str] = "tests.ThingHappened"
            aggregate_type: ClassVar[str] = "thing"
            thing_id: str


def test_unknown_type_name_is_a_clear_error():
    with pytest.raises(UnknownEventType, match=r"unknown event type 'nowhere.Nothing'"):
        event_type_get("nowhere.Nothing")


def test_upcast_v1_to_v2():
    cls, payload = payload_upcast("tests.Reshaped", 1, {"person_id": 1, "name": "Ada Lovelace"})
    assert cls is Reshaped
    assert payload == {"person_id": 1, "given": "Ada", "family": "Lovelace"}


def test_upcast_without_a_path_is_a_clear_error():
    with pytest.raises(UpcastError, match=r"tests.Stranded v1 cannot be read: no upcaster from v1"):
        payload_upcast("tests.Stranded", 1, {"person_id": 1, "tag": "x"})
    assert payload_upcast("tests.Stranded", 2, {"person_id": 1, "tag": "x"})[0] is Stranded


def test_a_stored_version_newer_than_the_code_is_a_clear_error():
    with pytest.raises(UpcastError, match="newer than this code's v2"):
        payload_upcast("tests.Reshaped", 3, {})


def test_upcaster_registration_is_checked():
    with pytest.raises(UpcastError, match="from_version must be between 1 and 1"):
        upcaster(Reshaped, from_version=2)(lambda p: p)
    with pytest.raises(UpcastError, match="already has an upcaster"):
        upcaster(Reshaped, from_version=1)(lambda p: p)


def test_meta_is_absent_until_the_outbox_hands_the_event_over():
    assert ThingHappened(thing_id="x").meta is None
    assert EventMeta.__dataclass_fields__.keys() >= {"event_id", "correlation_id"}

"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.fuzz.schemathesis_hooks``): test data that a
schema cannot know.

A schema-valid order names skus, but only catalogued ones can be ordered: a positive (valid)
case of POST /api/orders/ has its lines' skus replaced by catalogued ones, each once, taken
from ``SHOP_FUZZ_SKUS`` (comma-separated). Negative cases are sent as generated. This is the
"supply the identifiers" that schemathesis asks for; every check still runs on every case.
"""

from __future__ import annotations

import os

import schemathesis


def catalogued_skus() -> list[str]:
    return [sku for sku in os.environ.get("SHOP_FUZZ_SKUS", "").split(",") if sku]


@schemathesis.hook
def before_call(context, case, kwargs):
    if (case.method.upper(), case.path) != ("POST", "/api/orders/"):
        return
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    case.body = order_body_catalogued(case.body, catalogued_skus())


def order_body_catalogued(body, skus: list[str]):
    """An order body whose lines name catalogued skus, each at most once, with a payment token
    in the gateway's format (tok_...), so that valid bodies can be accepted."""
    if not skus or not isinstance(body, dict) or not isinstance(body.get("lines"), list):
        return body
    lines = [dict(line) for line in body["lines"] if isinstance(line, dict)][: len(skus)]
    for sku, line in zip(skus, lines, strict=False):
        line["sku"] = sku
    return {**body, "lines": lines, "payment_token": "tok_visa"}

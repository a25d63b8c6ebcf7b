"""Broker adapters, chosen by the scheme of ``EVENT_BUS_URL``."""

from __future__ import annotations

from urllib.parse import urlparse

from outbox.bus.adapters.base import BusAdapter


def adapter_for(url: str, *, namespace: str, ack_wait: float = 30.0) -> BusAdapter:
    scheme = urlparse(url).scheme
    if scheme in ("amqp", "amqps"):
        from outbox.bus.adapters.rabbitmq import RabbitMQAdapter

        return RabbitMQAdapter(url, namespace=namespace)
    if scheme in ("nats", "tls"):
        from outbox.bus.adapters.nats import NatsAdapter

        return NatsAdapter(url, namespace=namespace, ack_wait=ack_wait)
    raise ValueError(f"EVENT_BUS_URL: no adapter for {scheme!r} (amqp:// or nats://)")

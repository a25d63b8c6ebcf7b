"""The event bus: externalised events leave through the outbox and come back in exactly once.

Outbound, an externalised event gets one more delivery when it is published: to the subscriber
``bus`` (:mod:`outbox.bus.target`). The relay claims it like any other and routes it to the
``bus`` queue, where :func:`outbox.bus.publishing.bus_deliveries_publish` sends a whole batch to
the broker, waits for the broker to confirm every message, and marks the confirmed ones done in
one statement. Leases, retries with backoff, dead letters, replay, the admin and the timeline
therefore apply to the bus exactly as to a local subscriber.

Inbound, ``manage.py bus_consume`` receives a message and stores it in this service's event
store, unique on the event id, with its deliveries to the local subscribers, in one transaction;
it acknowledges the broker only after that commit (:mod:`outbox.bus.consuming`).

On the wire an event is a CloudEvent (:mod:`outbox.bus.wire`). The broker is hidden behind a
small adapter interface (:mod:`outbox.bus.adapters`): RabbitMQ and NATS JetStream today.
"""

"""Every statement the outbox writes by hand on PostgreSQL (each where the ORM cost too much),
named from the models' own metadata: the worker's lock and "done", the relay's claim, the bus
batch's lock and "done", the publisher's insert, and the aggregate sequence (PostgreSQL and
SQLite)."""

from __future__ import annotations

import json

from django.db import connection

from outbox.models import AggregateSequence, Delivery, Event


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def columns(model, names: list[str] | None = None, *, alias: str = "") -> str:
    """Quoted column names of ``names`` (field names; default: every concrete field)."""
    fields = (
        model._meta.concrete_fields
        if names is None
        else [model._meta.get_field(name) for name in names]
    )
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + connection.ops.quote_name(field.column) for field in fields)


def aggregate_sequences_take(connection, counts: dict[str, int]) -> dict[str, int]:
    """Take ``counts[key]`` sequence numbers for each aggregate key; returns each key's last.

    One upsert (PostgreSQL, and SQLite 3.35+): it creates or increments each key's row and
    keeps it locked until the caller's transaction ends. Keys are taken in sorted order, so
    two transactions publishing for the same aggregates queue instead of deadlocking.
    """
    keys = sorted(counts)
    name = table(AggregateSequence)
    key_column, last_column = (
        columns(AggregateSequence, ["aggregate_key"]),
        columns(AggregateSequence, ["last"]),
    )
    statement = (
        f"INSERT INTO {name} ({key_column}, {last_column}) "
        f"VALUES {', '.join(['(%s, %s)'] * len(keys))} "
        f"ON CONFLICT ({key_column}) DO UPDATE SET {last_column} = {name}.{last_column} + "
        f"excluded.{last_column} RETURNING {key_column}, {last_column}"
    )
    params = [value for key in keys for value in (key, counts[key])]
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return dict(cursor.fetchall())


# --- the worker ---------------------------------------------------------------------------------


def delivery_pending_lock(connection, delivery_id: int) -> Delivery | None:
    """The pending delivery ``delivery_id``, past its backoff, with its event, locked (SKIP
    LOCKED); every column of both models, so both are complete."""
    with connection.cursor() as cursor:
        cursor.execute(_PENDING_LOCK_SQL, [delivery_id, Delivery.Status.PENDING])
        found = cursor.fetchone()
    if found is None:
        return None
    split = len(_DELIVERY_CONVERTERS)
    delivery = _from_row(connection, Delivery, _DELIVERY_CONVERTERS, found[:split])
    event = _from_row(connection, Event, _EVENT_CONVERTERS, found[split:])
    Delivery.event.field.set_cached_value(delivery, event)
    return delivery


def delivery_done_save(connection, delivery: Delivery) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _DONE_SQL,
            [
                delivery.status,
                delivery.attempts,
                delivery.completed_at,
                delivery.updated_at,
                delivery.pk,
            ],
        )


def _from_row(connection, model, converters: list, values) -> Delivery | Event:
    # What the ORM does with a row: each field's own conversion (JSON text to objects).
    converted = [
        convert(value, None, connection) if convert else value
        for convert, value in zip(converters, values, strict=True)
    ]
    return model.from_db(connection.alias, None, converted)


def _converters(model) -> list:
    return [getattr(field, "from_db_value", None) for field in model._meta.concrete_fields]


_DELIVERY_CONVERTERS, _EVENT_CONVERTERS = _converters(Delivery), _converters(Event)
_PENDING_LOCK_SQL = (
    f"SELECT {columns(Delivery, alias='d')}, {columns(Event, alias='e')} "
    f"FROM {table(Delivery)} d JOIN {table(Event)} e "
    f"ON {columns(Event, ['position'], alias='e')} = "
    f"{columns(Delivery, ['event'], alias='d')} "
    f"WHERE {columns(Delivery, ['id'], alias='d')} = %s "
    f"AND {columns(Delivery, ['status'], alias='d')} = %s "
    f"AND ({columns(Delivery, ['backoff_until'], alias='d')} IS NULL "
    f"OR {columns(Delivery, ['backoff_until'], alias='d')} <= statement_timestamp()) "
    "FOR UPDATE OF d SKIP LOCKED"
)
_DONE_SQL = (
    f"UPDATE {table(Delivery)} "
    f"SET ({columns(Delivery, ['status', 'attempts', 'completed_at', 'updated_at'])}) "
    f"= (%s, %s, %s, %s) WHERE {columns(Delivery, ['id'])} = %s"
)


# --- the relay ----------------------------------------------------------------------------------


def deliveries_claim(connection, picked, *, conf) -> list[tuple[int, str]]:
    """PostgreSQL: select, lock and lease in one round trip (``UPDATE … FROM (SELECT … FOR
    UPDATE SKIP LOCKED) … RETURNING``), the lease doubling computed per row."""
    select_sql, select_params = picked.query.sql_with_params()
    return _claim(connection, select_sql, select_params, conf=conf)


def deliveries_claim_of(connection, events, subscribers, *, conf) -> list[tuple[int, str]]:
    """PostgreSQL: the relay's claim (``deliveries_claim``, the same rules) narrowed to the
    deliveries of ``events`` (positions) to ``subscribers``, written once: a worker's
    continuation claims after each step, where compiling the ORM's query cost a share of
    the step's CPU."""
    params = [list(events), list(subscribers), Delivery.Status.PENDING, Delivery.Status.DONE]
    return _claim(connection, _CLAIM_OF_SQL, params, conf=conf)


def _claim(connection, select_sql: str, select_params, *, conf) -> list[tuple[int, str]]:
    # MATERIALIZED: the picked rows are selected (and locked) once; as a plain subquery the
    # planner may scan it again for each row it joins, and SKIP LOCKED then picks other rows.
    # ``rank`` keeps the claim's order (most overdue first) through the UPDATE.
    statement = f"""
        WITH picked AS MATERIALIZED (
            SELECT p.id, row_number() OVER () AS rank FROM ({select_sql}) AS p
        ), claimed AS (
            UPDATE {table(Delivery)} AS d
            SET next_attempt_at = statement_timestamp() + make_interval(
                    secs => %s * power(2, least(d.dispatches, %s))
                ),
                dispatched_at = statement_timestamp(),
                dispatches = d.dispatches + 1
            FROM picked
            WHERE d.id = picked.id AND d.status = %s
            RETURNING d.id, d.subscriber, picked.rank
        )
        SELECT id, subscriber FROM claimed ORDER BY rank
    """
    params = (*select_params, conf.LEASE_SECONDS, conf.LEASE_MAX_DOUBLINGS, Delivery.Status.PENDING)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return [(pk, subscriber) for pk, subscriber in cursor.fetchall()]


def _delivery_column(name: str, alias: str) -> str:
    return columns(Delivery, [name], alias=alias)


# Due, pending, and (ordered) no undone earlier delivery of the aggregate to the subscriber: the
# relay's conditions (outbox/relay.py, deliveries_claim), on the given events and subscribers.
_CLAIM_OF_SQL = (
    f"SELECT {_delivery_column('id', 'c')} FROM {table(Delivery)} c "
    f"WHERE {_delivery_column('event', 'c')} = ANY(%s) "
    f"AND {_delivery_column('subscriber', 'c')} = ANY(%s) "
    f"AND {_delivery_column('status', 'c')} = %s "
    f"AND {_delivery_column('next_attempt_at', 'c')} <= statement_timestamp() "
    f"AND (NOT {_delivery_column('ordered', 'c')} OR NOT EXISTS ("
    f"SELECT 1 FROM {table(Delivery)} u "
    f"WHERE {_delivery_column('subscriber', 'u')} = {_delivery_column('subscriber', 'c')} "
    f"AND {_delivery_column('aggregate_key', 'u')} = {_delivery_column('aggregate_key', 'c')} "
    f"AND {_delivery_column('sequence', 'u')} < {_delivery_column('sequence', 'c')} "
    f"AND {_delivery_column('status', 'u')} <> %s)) "
    f"ORDER BY {_delivery_column('next_attempt_at', 'c')} "
    f"FOR UPDATE OF c SKIP LOCKED"
)


# --- the bus ---------------------------------------------------------------------------------

BUS_BATCH_COLUMNS = [
    ("d", "id"),
    ("d", "attempts"),
    ("d", "aggregate_key"),
    ("e", "event_id"),
    ("e", "type"),
    ("e", "version"),
    ("e", "occurred_at"),
    ("e", "payload"),
    ("e", "correlation_id"),
    ("e", "causation_id"),
    ("e", "headers"),
]


def bus_batch_lock(connection, ids: list[int], *, subscriber: str) -> list[tuple]:
    """PostgreSQL: lock the still-pending bus deliveries among ``ids`` (``SKIP LOCKED``) and
    read what their messages need, in event order: one statement, the ids one array
    parameter (a list of 500 placeholders costs more to send than the rows to read)."""
    models = {"d": Delivery, "e": Event}
    selected = ", ".join(
        columns(models[alias], [name], alias=alias) for alias, name in BUS_BATCH_COLUMNS
    )
    statement = f"""
        SELECT {selected}
        FROM {table(Delivery)} AS d JOIN {table(Event)} AS e
          ON {columns(Event, ["position"], alias="e")} = {columns(Delivery, ["event"], alias="d")}
        WHERE {columns(Delivery, ["id"], alias="d")} = ANY(%s)
          AND {columns(Delivery, ["subscriber"], alias="d")} = %s
          AND {columns(Delivery, ["status"], alias="d")} = %s
        ORDER BY {columns(Delivery, ["event"], alias="d")}
        FOR UPDATE OF d SKIP LOCKED
    """
    with connection.cursor() as cursor:
        cursor.execute(statement, (list(ids), subscriber, Delivery.Status.PENDING))
        rows = cursor.fetchall()
    # Django reads jsonb as text and leaves decoding to the field; so does this.
    return [(*row[:7], _json(row[7]), *row[8:10], _json(row[10])) for row in rows]


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


def bus_batch_done(connection, ids: list[int], *, now) -> int:
    """PostgreSQL: the confirmed bus deliveries done, one statement, still only if pending."""
    statement = f"""
        UPDATE {table(Delivery)}
        SET {columns(Delivery, ["status"])} = %s,
            {columns(Delivery, ["attempts"])} = {columns(Delivery, ["attempts"])} + 1,
            {columns(Delivery, ["completed_at"])} = %s,
            {columns(Delivery, ["updated_at"])} = %s
        WHERE {columns(Delivery, ["id"])} = ANY(%s) AND {columns(Delivery, ["status"])} = %s
    """
    with connection.cursor() as cursor:
        cursor.execute(
            statement,
            (Delivery.Status.DONE, now, now, list(ids), Delivery.Status.PENDING),
        )
        return cursor.rowcount


# --- the publisher ------------------------------------------------------------------------------


_EVENT_FIELDS = [
    "event_id",
    "type",
    "version",
    "aggregate_type",
    "aggregate_id",
    "payload",
    "correlation_id",
    "causation_id",
    "headers",
    "occurred_at",
    "sequence",
]
_EVENT_VALUES = "(%s, %s, %s, %s, %s, %s::jsonb, %s, %s::uuid, %s::jsonb, %s, %s)"
_DELIVERY_FIELDS = [
    "event",
    "subscriber",
    "ordered",
    "aggregate_key",
    "sequence",
    "status",
    "attempts",
    "dispatches",
    "last_error",
    "next_attempt_at",
    "created_at",
    "updated_at",
]


def events_insert(connection, rows: list[Event], targets: list, *, now) -> None:
    """PostgreSQL: the events and their deliveries in one statement (one round trip, and none
    of ``bulk_create``'s per-object work); sets each row's ``position`` as ``bulk_create`` does.
    """
    params: list = []
    for row in rows:
        params += [
            row.event_id,
            row.type,
            row.version,
            row.aggregate_type,
            row.aggregate_id,
            json.dumps(row.payload),
            row.correlation_id,
            row.causation_id,
            json.dumps(row.headers),
            row.occurred_at,
            row.sequence,
        ]
    statement = (
        f"WITH e AS (INSERT INTO {table(Event)} ({columns(Event, _EVENT_FIELDS)}) "
        f"VALUES {', '.join([_EVENT_VALUES] * len(rows))} RETURNING position, event_id)"
    )
    if targets:
        # Due on the database's clock, which the relay's claim compares with.
        params += [Delivery.Status.PENDING, now, now]
        for row, sub in targets:
            params += [
                row.event_id,
                sub.name,
                sub.ordered,
                row.aggregate_key,
                row.sequence,
            ]
        values = ", ".join(["(%s::uuid, %s, %s::boolean, %s, %s::bigint)"] * len(targets))
        statement += (
            f", d AS (INSERT INTO {table(Delivery)} "
            f"({columns(Delivery, _DELIVERY_FIELDS)}) "
            "SELECT e.position, v.subscriber, v.ordered, v.aggregate_key, v.sequence, "
            "%s, 0, 0, '', statement_timestamp(), %s, %s "
            f"FROM e JOIN (VALUES {values}) "
            "AS v(event_id, subscriber, ordered, aggregate_key, sequence) "
            "ON v.event_id = e.event_id)"
        )
    statement += " SELECT position, event_id FROM e"
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        positions = dict((event_id, position) for position, event_id in cursor.fetchall())
    for row in rows:
        row.position = positions[row.event_id]
        row._state.adding = False
        row._state.db = connection.alias

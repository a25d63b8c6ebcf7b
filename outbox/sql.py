"""Every statement the outbox writes by hand on PostgreSQL (each where the ORM cost too much),
named from the models' own metadata: the worker's lock and "done", the relay's claim, the bus
batch's lock and "done", the publisher's insert (with the aggregate sequence), and the aggregate
sequence alone (SQLite's publisher)."""

from __future__ import annotations

import functools
import json
from collections import Counter

from django.db import OperationalError, connection, transaction

from outbox.models import AggregateSequence, Delivery, Event
from outbox.wake import NOTIFY_SQL


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


def sequences_assign(connection, rows: list[Event]) -> None:
    """Number each event within its aggregate (``Event.sequence``), under the aggregate's
    sequence row lock: ordered subscribers go by this number, not by ``position``. The SQLite
    publisher's and the bus consumer's (PostgreSQL's publisher does it in ``events_insert``)."""
    last = aggregate_sequences_take(connection, Counter(row.aggregate_key for row in rows))
    for row in reversed(rows):
        row.sequence = last[row.aggregate_key]
        last[row.aggregate_key] -= 1


def aggregate_sequences_take(connection, counts: dict[str, int]) -> dict[str, int]:
    """Take ``counts[key]`` sequence numbers for each aggregate key; returns each key's last.

    SQLite's publisher (PostgreSQL's does the same inside ``events_insert``). One upsert
    (SQLite 3.35+, and PostgreSQL): it creates or increments each key's row and
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


def delivery_pending_lock(
    connection, delivery_id: int, *, wait_seconds: float = 0.0, skipped: bool = False
) -> Delivery | None:
    """The pending delivery ``delivery_id``, past its backoff, with its event, locked; every
    column of both models, so both are complete.

    ``SKIP LOCKED`` first; a delivery it skips is asked for once more waiting up to
    ``wait_seconds`` for the lock (``locked_waiting``), so that a row another relay's claim
    locked without taking it (its statement still running) is not mistaken for a duplicate at
    work and left to wait a lease. ``skipped``: a ``SKIP LOCKED`` statement
    (``deliveries_done_lock``) has just left it out; only the waiting one is left to ask."""
    params = [delivery_id, Delivery.Status.PENDING]
    found = None
    if not skipped:
        with connection.cursor() as cursor:
            cursor.execute(_PENDING_LOCK_SKIP_SQL, params)
            found = cursor.fetchone()
    if found is None and wait_seconds > 0:
        found = next(
            iter(locked_waiting(connection, _PENDING_LOCK_SQL, params, wait_seconds)), None
        )
    if found is None:
        return None
    return _delivery_of_row(connection, found)


def _delivery_of_row(connection, row) -> Delivery:
    """A delivery and its event (cached on it) from a lock statement's row: the delivery's
    columns, then the event's."""
    split = len(_DELIVERY_CONVERTERS)
    delivery = _from_row(connection, Delivery, _DELIVERY_CONVERTERS, row[:split])
    event = _from_row(connection, Event, _EVENT_CONVERTERS, row[split:])
    Delivery.event.field.set_cached_value(delivery, event)
    return delivery


def _rows_locked(
    connection, skip_sql: str, wait_sql: str, params: list, wait_seconds: float, *, order
) -> list[tuple]:
    """The rows ``skip_sql`` locks (``SKIP LOCKED``); the ids of ``params[0]`` (a list, each
    row's first column) it skipped are asked for once more by ``wait_sql``, waiting up to
    ``wait_seconds`` for their locks (``locked_waiting``); rows sorted by ``order`` when any
    came that way."""
    with connection.cursor() as cursor:
        cursor.execute(skip_sql, params)
        rows = cursor.fetchall()
    missing = set(params[0]) - {row[0] for row in rows}
    if missing and wait_seconds > 0:
        more = locked_waiting(connection, wait_sql, [sorted(missing), *params[1:]], wait_seconds)
        if more:
            rows = sorted([*rows, *more], key=order)
    return rows


def deliveries_pending_lock(
    connection, delivery_ids: list[int], *, wait_seconds: float = 0.0
) -> list[Delivery]:
    """``delivery_pending_lock`` for several deliveries in one statement, in the order of their
    ids, which is the order their rows are locked in: two workers' batches that share rows take
    them in the same order, so they queue instead of deadlocking. The ids ``SKIP LOCKED`` left
    out are asked for once more (``locked_waiting``), as for one delivery."""
    rows = _rows_locked(
        connection,
        _PENDING_LOCK_MANY_SKIP_SQL,
        _PENDING_LOCK_MANY_SQL,
        [sorted(delivery_ids), Delivery.Status.PENDING],
        wait_seconds,
        order=lambda row: row[0],
    )
    return [_delivery_of_row(connection, row) for row in rows]


def deliveries_pending_lock_waiting(
    connection, delivery_ids: list[int], *, wait_seconds: float
) -> list[Delivery]:
    """The second half of ``deliveries_pending_lock``: ids a ``SKIP LOCKED`` statement left out
    (``deliveries_done_lock``), asked for once more, waiting up to ``wait_seconds`` for their
    locks (``locked_waiting``); locked, not marked."""
    if not delivery_ids or wait_seconds <= 0:
        return []
    params = [sorted(delivery_ids), Delivery.Status.PENDING]
    rows = locked_waiting(connection, _PENDING_LOCK_MANY_SQL, params, wait_seconds)
    return [_delivery_of_row(connection, row) for row in rows]


def deliveries_done_save(connection, delivery_ids: list[int], *, now) -> None:
    """The deliveries of a batch whose handlers returned, done in one statement (each attempt
    counted: the rows are locked, so ``attempts + 1`` is the attempt that ran)."""
    with connection.cursor() as cursor:
        cursor.execute(_DONE_MANY_SQL, [Delivery.Status.DONE, now, now, list(delivery_ids)])


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
    "FOR UPDATE OF d"
)
_PENDING_LOCK_SKIP_SQL = _PENDING_LOCK_SQL + " SKIP LOCKED"
_PENDING_LOCK_MANY_SQL = (
    _PENDING_LOCK_SQL.replace(
        f"WHERE {columns(Delivery, ['id'], alias='d')} = %s",
        f"WHERE {columns(Delivery, ['id'], alias='d')} = ANY(%s)",
    ).removesuffix(" FOR UPDATE OF d")
    + f" ORDER BY {columns(Delivery, ['id'], alias='d')} FOR UPDATE OF d"
)
_PENDING_LOCK_MANY_SKIP_SQL = _PENDING_LOCK_MANY_SQL + " SKIP LOCKED"
_DONE_MANY_SQL = (
    f"UPDATE {table(Delivery)} "
    f"SET {columns(Delivery, ['status'])} = %s, "
    f"{columns(Delivery, ['attempts'])} = {columns(Delivery, ['attempts'])} + 1, "
    f"{columns(Delivery, ['completed_at'])} = %s, {columns(Delivery, ['updated_at'])} = %s "
    f"WHERE {columns(Delivery, ['id'])} = ANY(%s)"
)
_DONE_SQL = (
    f"UPDATE {table(Delivery)} "
    f"SET ({columns(Delivery, ['status', 'attempts', 'completed_at', 'updated_at'])}) "
    f"= (%s, %s, %s, %s) WHERE {columns(Delivery, ['id'])} = %s"
)


def deliveries_done_lock(
    connection, delivery_ids: list[int], *, now, unmarked: list[str]
) -> list[Delivery]:
    """The lock that is also the done mark: the pending deliveries among ``delivery_ids``, past
    their backoff and not locked by another transaction (``SKIP LOCKED``), locked in the order
    of their ids and marked done as a run that returns leaves them (status, the attempt counted,
    ``completed_at``), each with its event; one statement for what was a locking read and, after
    the run, an ``UPDATE``. The caller's transaction (or its savepoint) rolling back is what
    undoes the mark when the run fails (outbox/handling.py).

    Locked and returned unchanged: deliveries of ordered subscribers (their predecessor and
    successor are checked first) and of the subscribers named in ``unmarked`` (``prepare=``
    still to run, which commits with the delivery pending). A returned delivery whose status is
    done was marked. The ids it skipped are not asked for again: ``delivery_pending_lock`` does
    that, waiting for the lock."""
    params = [list(unmarked), sorted(delivery_ids), Delivery.Status.PENDING]
    params += [Delivery.Status.DONE, now, now]
    with connection.cursor() as cursor:
        cursor.execute(_DONE_LOCK_SQL, params)
        rows = sorted(cursor.fetchall(), key=lambda row: row[0])
    return [_delivery_of_row(connection, row) for row in rows]


def _done_lock_sql() -> str:
    def column(name: str, alias: str = "") -> str:
        return columns(Delivery, [name], alias=alias)

    def marked(name: str, value: str) -> str:
        kept = column(name, "d")
        return f"{column(name)} = CASE WHEN p.unmarked THEN {kept} ELSE {value} END"

    return (
        f"WITH p AS MATERIALIZED (SELECT {column('id', 'c')} AS id, "
        f"({column('ordered', 'c')} OR {column('subscriber', 'c')} = ANY(%s)) AS unmarked "
        f"FROM {table(Delivery)} c WHERE {column('id', 'c')} = ANY(%s) "
        f"AND {column('status', 'c')} = %s "
        f"AND ({column('backoff_until', 'c')} IS NULL "
        f"OR {column('backoff_until', 'c')} <= statement_timestamp()) "
        f"ORDER BY {column('id', 'c')} FOR UPDATE OF c SKIP LOCKED) "
        f"UPDATE {table(Delivery)} AS d SET {marked('status', '%s')}, "
        f"{marked('attempts', column('attempts', 'd') + ' + 1')}, "
        f"{marked('completed_at', '%s')}, {marked('updated_at', '%s')} "
        f"FROM p, {table(Event)} AS e "
        f"WHERE {column('id', 'd')} = p.id "
        f"AND {columns(Event, ['position'], alias='e')} = {column('event', 'd')} "
        f"RETURNING {columns(Delivery, alias='d')}, {columns(Event, alias='e')}"
    )


_DONE_LOCK_SQL = _done_lock_sql()


def locked_waiting(connection, statement: str, params, wait_seconds: float) -> list[tuple]:
    """The rows of a locking ``statement`` (``FOR UPDATE``, no ``SKIP LOCKED``), waiting up to
    ``wait_seconds`` for a lock another transaction holds; ``[]`` if it is still held then.

    Why a task sent for a row waits instead of skipping it: on PostgreSQL, a relay's claim
    whose statement began before another claim leased the row still reaches it, locks its
    newest version, finds it no longer due, leaves it out of its result, and keeps the lock
    until its statement ends (docs/outbox.md, "Claim"). ``SKIP LOCKED`` alone cannot tell that
    lock from a duplicate at work, and the row would wait a whole lease. Waiting re-checks the
    statement's conditions on the row once the lock is released (READ COMMITTED), so a row a
    real duplicate finished meanwhile is still not returned. Runs in a savepoint: a lock still
    held at the deadline (a duplicate's long run), or a deadlock between two duplicates each
    waiting for a row the other holds, leaves the caller's transaction as it was.
    """
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            # The caller's lock_timeout read before it is changed, and put back after.
            cursor.execute(_LOCK_TIMEOUT_SQL, [f"{int(wait_seconds * 1000)}ms"])
            [(previous, _)] = cursor.fetchall()
            cursor.execute(statement, params)
            rows = cursor.fetchall()
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])
            return rows
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) in _LOCK_GIVEN_UP:
            return []
        raise


_LOCK_TIMEOUT_SQL = (
    "WITH old AS MATERIALIZED (SELECT current_setting('lock_timeout') AS value) "
    "SELECT value, set_config('lock_timeout', %s, true) FROM old"
)
# lock_not_available (lock_timeout), deadlock_detected
_LOCK_GIVEN_UP = {"55P03", "40P01"}


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
    ("d", "subscriber"),
]


def bus_batch_lock(
    connection, ids: list[int], *, subscriber: str, replay_prefix: str, wait_seconds: float = 0.0
) -> list[tuple]:
    """PostgreSQL: lock the still-pending bus deliveries among ``ids`` (to ``subscriber``, or a
    replay to one service: a name starting with ``replay_prefix``) and read what their messages
    need, in event order: one statement, the ids one array parameter (a list of 500
    placeholders costs more to send than the rows to read).

    ``SKIP LOCKED`` first (a duplicate message or a second worker steps aside); the ids it
    skipped are asked for once more, waiting up to ``wait_seconds`` for their locks
    (``locked_waiting``: a row another relay's claim locked without taking it is published
    now, not a lease later)."""
    rows = _rows_locked(
        connection,
        _BUS_BATCH_SKIP_SQL,
        _BUS_BATCH_SQL,
        [list(ids), subscriber, f"{replay_prefix}%", Delivery.Status.PENDING],
        wait_seconds,
        order=lambda row: row[-1],
    )
    # Django reads jsonb as text and leaves decoding to the field; so does this. The event's
    # position (last, for the order) is not one of BUS_BATCH_COLUMNS.
    return [(*row[:7], _json(row[7]), *row[8:10], _json(row[10]), *row[11:-1]) for row in rows]


def _bus_batch_sql() -> str:
    models = {"d": Delivery, "e": Event}
    selected = ", ".join(
        columns(models[alias], [name], alias=alias) for alias, name in BUS_BATCH_COLUMNS
    )
    # The event's position last: the order of the rows, also when two statements' are merged.
    event = columns(Delivery, ["event"], alias="d")
    return f"""
        SELECT {selected}, {event}
        FROM {table(Delivery)} AS d JOIN {table(Event)} AS e
          ON {columns(Event, ["position"], alias="e")} = {event}
        WHERE {columns(Delivery, ["id"], alias="d")} = ANY(%s)
          AND ({columns(Delivery, ["subscriber"], alias="d")} = %s
               OR {columns(Delivery, ["subscriber"], alias="d")} LIKE %s)
          AND {columns(Delivery, ["status"], alias="d")} = %s
        ORDER BY {event}
        FOR UPDATE OF d"""


_BUS_BATCH_SQL = _bus_batch_sql()
_BUS_BATCH_SKIP_SQL = _BUS_BATCH_SQL + " SKIP LOCKED"


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
# The sequence: the key's new last value (from ``s``) less the offset.
_EVENT_VALUES = (
    "(%s, %s, %s, %s, %s, %s::jsonb, %s, %s::uuid, %s::jsonb, %s, "
    "(SELECT s.last FROM s WHERE s.k = %s) - %s)"
)
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


def events_insert(
    connection,
    rows: list[Event],
    targets: list,
    *,
    now,
    notify: bool = False,
    leased: list[bool] | None = None,
    lease: float | None = None,
) -> dict[tuple[int, str], int]:
    """PostgreSQL: the aggregates' sequence numbers, the events and their deliveries in one
    statement (one round trip, and none of ``bulk_create``'s per-object work); sets each row's
    ``sequence`` and ``position`` as ``aggregate_sequences_take`` and ``bulk_create`` do.

    The sequence upsert takes its keys in sorted order and keeps their rows locked until the
    transaction ends, as ``aggregate_sequences_take`` does; each event's number is its key's
    new last value less the number of the call's later events of that key.

    ``notify``: the statement also wakes the relay by ``pg_notify`` (outbox/wake.py), delivered
    when the transaction commits.

    ``leased`` (one flag per target): those deliveries are born leased for ``lease`` seconds, as
    a first claim leases them (``dispatched_at``, ``dispatches`` 1, due again when the lease
    runs out, on the database's clock); returns their ids by (event position, subscriber).
    """
    leasing = bool(leased) and any(leased)
    later: Counter = Counter()
    offsets = []
    for row in reversed(rows):
        offsets.append(later[row.aggregate_key])
        later[row.aggregate_key] += 1
    offsets.reverse()
    keys = sorted(later)
    params: list = [value for key in keys for value in (key, later[key])]
    for row, offset in zip(rows, offsets, strict=True):
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
            row.aggregate_key,
            offset,
        ]
    if targets:
        if leasing:
            params += [lease, Delivery.Status.PENDING, now, now]
            for (row, sub), born in zip(targets, leased, strict=True):
                params += [row.event_id, sub.name, sub.ordered, row.aggregate_key, born]
        else:
            params += [Delivery.Status.PENDING, now, now]
            for row, sub in targets:
                params += [row.event_id, sub.name, sub.ordered, row.aggregate_key]
    statement = _events_insert_sql(len(keys), len(rows), len(targets), notify, leasing)
    stored, born_ids = {}, {}
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        for position, event_id, sequence, delivery_id, subscriber in cursor:
            if delivery_id is None:
                stored[event_id] = (position, sequence)
            else:
                born_ids[position, subscriber] = delivery_id
    for row in rows:
        row.position, row.sequence = stored[row.event_id]
        row._state.adding = False
        row._state.db = connection.alias
    return born_ids


@functools.lru_cache(maxsize=64)
def _events_insert_sql(
    keys: int, events: int, targets: int, notify: bool = False, leasing: bool = False
) -> str:
    """``events_insert``'s statement for its shape, written once (building it took a quarter of
    the publisher's own CPU)."""
    name = table(AggregateSequence)
    key_column = columns(AggregateSequence, ["aggregate_key"])
    last_column = columns(AggregateSequence, ["last"])
    statement = (
        f"WITH s AS (INSERT INTO {name} ({key_column}, {last_column}) "
        f"VALUES {', '.join(['(%s, %s)'] * keys)} "
        f"ON CONFLICT ({key_column}) DO UPDATE SET {last_column} = {name}.{last_column} + "
        f"excluded.{last_column} RETURNING {key_column} AS k, {last_column} AS last), "
        f"e AS (INSERT INTO {table(Event)} ({columns(Event, _EVENT_FIELDS)}) "
        f"VALUES {', '.join([_EVENT_VALUES] * events)} "
        f"RETURNING position, event_id, {columns(Event, ['sequence'])} AS sequence)"
    )
    if targets and not leasing:
        # Due on the database's clock, which the relay's claim compares with.
        values = ", ".join(["(%s::uuid, %s, %s::boolean, %s)"] * targets)
        statement += (
            f", d AS (INSERT INTO {table(Delivery)} "
            f"({columns(Delivery, _DELIVERY_FIELDS)}) "
            "SELECT e.position, v.subscriber, v.ordered, v.aggregate_key, e.sequence, "
            "%s, 0, 0, '', statement_timestamp(), %s, %s "
            f"FROM e JOIN (VALUES {values}) "
            "AS v(event_id, subscriber, ordered, aggregate_key) "
            "ON v.event_id = e.event_id)"
        )
    elif targets:
        # Those flagged ``born`` leased as the relay's first claim leases (outbox/relay.py),
        # on the same clock; their ids returned.
        values = ", ".join(["(%s::uuid, %s, %s::boolean, %s, %s::boolean)"] * targets)
        fields = columns(Delivery, [*_DELIVERY_FIELDS, "dispatched_at"])
        statement += (
            f", l AS (SELECT %s::double precision AS secs), "
            f"d AS (INSERT INTO {table(Delivery)} ({fields}) "
            "SELECT e.position, v.subscriber, v.ordered, v.aggregate_key, e.sequence, "
            "%s, 0, CASE WHEN v.born THEN 1 ELSE 0 END, '', "
            "CASE WHEN v.born THEN statement_timestamp() + make_interval(secs => l.secs) "
            "ELSE statement_timestamp() END, %s, %s, "
            "CASE WHEN v.born THEN statement_timestamp() END "
            f"FROM e JOIN (VALUES {values}) "
            "AS v(event_id, subscriber, ordered, aggregate_key, born) "
            "ON v.event_id = e.event_id CROSS JOIN l "
            f"RETURNING {columns(Delivery, ['event', 'id', 'subscriber', 'dispatches'])})"
        )
    if notify:
        # A CTE that only reads runs only if the statement reads it: joined, one row.
        statement += f", n AS ({NOTIFY_SQL})"
    statement += " SELECT position, event_id, sequence, NULL::bigint, NULL::text FROM e" + (
        ", n" if notify else ""
    )
    if leasing:
        event, delivery_id, subscriber, dispatches = (
            columns(Delivery, [name]) for name in ("event", "id", "subscriber", "dispatches")
        )
        statement += (
            f" UNION ALL SELECT {event}, NULL::uuid, NULL::bigint, {delivery_id}, {subscriber} "
            f"FROM d WHERE {dispatches} = 1"
        )
    return statement

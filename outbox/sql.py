"""Statements the outbox writes by hand on PostgreSQL, named from the models' own metadata."""

from __future__ import annotations

from django.db import connection


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
    from outbox.models import AggregateSequence

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

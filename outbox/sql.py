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

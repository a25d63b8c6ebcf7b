"""A saga step's hottest statements, written once per model and database instead of built by the
ORM on every call (issue 12, docs/benchmarks.md "The apps' statements written once").

Building and compiling a queryset costs more CPU than the statement itself costs PostgreSQL for
the small reads and writes a saga step makes (a quarter of a worker's CPU under cProfile). Each
helper here writes its statement from the model's metadata the first time it meets a shape
(model, database, fields), keeps it, and then only adapts the parameters and converts the row
the way the ORM does (each field's ``get_db_prep_*`` and the backend's and field's converters),
on PostgreSQL and SQLite alike. None of them sends a signal (nothing in the apps listens to
their models' signals).

``row_get``: the one row whose fields equal the given values (a unique lookup), as a model
instance, optionally locked (``FOR UPDATE OF`` its own table on PostgreSQL; SQLite locks the
database on the first write instead). ``row_update``: ``save(update_fields=...)`` of an instance
already stored, with ``auto_now`` fields set as ``save()`` sets them. ``rows_load``: a model's
columns for a statement written by hand, and its rows back as instances (for a read that joins).
``insert_or_nothing`` (``outbox/transactions.py``) keeps its statement the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import TypeVar

from django.db import connections, router
from django.db.models import Model

M = TypeVar("M", bound=Model)


def _connection(model, *, write: bool):
    alias = (router.db_for_write if write else router.db_for_read)(model)
    return alias, connections[alias]


@functools.lru_cache(maxsize=256)
def _converters(model, vendor_alias: str) -> tuple:
    """Per concrete field, what the ORM's compiler applies to a value read from the database:
    the backend's converters, then the field's own (``from_db_value``), with the column they
    are given (SQLite's decimal converter reads its field from it)."""
    connection = connections[vendor_alias]
    found = []
    for field in model._meta.concrete_fields:
        column = field.get_col(model._meta.db_table)
        convert = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        found.append((tuple(convert), column))
    return tuple(found)


def model_columns(model, alias: str) -> str:
    """Every concrete column of ``model``, quoted and prefixed with ``alias``, in the order
    ``rows_load`` reads them."""
    connection = connections[router.db_for_read(model)]
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(field.column)}" for field in model._meta.concrete_fields)


def rows_load(model: type[M], rows: Iterable[Sequence], *, using: str | None = None) -> list[M]:
    """Instances of ``model`` from rows whose first columns are ``model_columns(model, ...)``;
    the rest of each row is left for the caller (``row[len(concrete fields):]``)."""
    using = using or router.db_for_read(model)
    connection = connections[using]
    converters = _converters(model, using)
    width = len(converters)
    loaded = []
    for row in rows:
        values = []
        for value, (convert, column) in zip(row[:width], converters, strict=True):
            for converter in convert:
                value = converter(value, column, connection)
            values.append(value)
        loaded.append(model.from_db(using, None, values))
    return loaded


@functools.lru_cache(maxsize=256)
def _get_sql(model, using: str, names: tuple[str, ...], lock: bool) -> str:
    connection = connections[using]
    quote = connection.ops.quote_name
    meta = model._meta
    where = " AND ".join(f"t.{quote(meta.get_field(name).column)} = %s" for name in names)
    tail = ""
    if lock and connection.features.has_select_for_update:
        tail = " " + connection.ops.for_update_sql(
            of=("t",) if connection.features.has_select_for_update_of else ()
        )
    # LIMIT 2: a lookup that is not unique after all is an error, as with ``get``.
    return (
        f"SELECT {model_columns(model, 't')} FROM {quote(meta.db_table)} t WHERE {where} "
        f"LIMIT 2{tail}"
    )


def row_get(model: type[M], *, lock: bool = False, **equal) -> M | None:
    """The row of ``model`` whose fields equal ``equal`` (field names, as in ``filter``; a
    unique lookup), or None; ``lock``: ``SELECT ... FOR UPDATE`` (of its own table) where the
    database has it. More than one row raises ``MultipleObjectsReturned``."""
    using = router.db_for_write(model) if lock else router.db_for_read(model)
    connection = connections[using]
    names = tuple(equal)
    fields = [model._meta.get_field(name) for name in names]
    params = [
        field.get_db_prep_value(field.get_prep_value(equal[name]), connection, prepared=True)
        for field, name in zip(fields, names, strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(_get_sql(model, using, names, lock), params)
        rows = cursor.fetchall()
    if len(rows) > 1:
        raise model.MultipleObjectsReturned(f"more than one {model.__name__} for {equal!r}")
    return rows_load(model, rows, using=using)[0] if rows else None


@functools.lru_cache(maxsize=256)
def _update_sql(model, using: str, names: tuple[str, ...]) -> str:
    quote = connections[using].ops.quote_name
    meta = model._meta
    sets = ", ".join(f"{quote(meta.get_field(name).column)} = %s" for name in names)
    return f"UPDATE {quote(meta.db_table)} SET {sets} WHERE {quote(meta.pk.column)} = %s"


def row_update(obj: Model, fields: Iterable[str]) -> int:
    """``obj.save(update_fields=fields)`` in one statement written once per shape: each field's
    ``pre_save`` (``auto_now`` sets the time, on ``obj`` too) and ``get_db_prep_save`` as in
    ``save()``; no signals. Returns the number of rows changed (0: the row is gone)."""
    model = type(obj)
    using = router.db_for_write(model, instance=obj)
    connection = connections[using]
    names = tuple(fields)
    meta = model._meta
    params = []
    for name in names:
        field = meta.get_field(name)
        params.append(field.get_db_prep_save(field.pre_save(obj, False), connection))
    params.append(meta.pk.get_db_prep_value(obj.pk, connection))
    with connection.cursor() as cursor:
        cursor.execute(_update_sql(model, using, names), params)
        return cursor.rowcount

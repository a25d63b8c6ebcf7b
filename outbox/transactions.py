"""Two helpers for the apps' services, so that a saga step spends no statement it does not need
(issue 12, docs/benchmarks.md "Fewer statements per step").

``atomic``: a service's transaction. Called outside a handler it is Django's ``atomic``: a
transaction, or a savepoint inside the caller's. Called from a handler's run it joins the
delivery's transaction without a savepoint: a handler that raises has everything it wrote rolled
back (``outbox/handling.py``: a delivery handled alone has its whole transaction rolled back; one
of a batch, the savepoint its handler runs in, which the service's block joins), so a savepoint
of the service's own would roll back nothing more, and costs two statements (``SAVEPOINT``,
``RELEASE``) on every step. Inside the handler, a service that
catches an exception raised by a nested ``atomic`` service and goes on would find the
transaction marked for rollback: nothing in the apps does that (a savepoint it needs, around an
insert that may conflict, stays ``transaction.atomic``).

``insert_or_nothing``: ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` the primary key, one
statement where a savepoint around an insert that may violate a unique constraint costs three.
"""

from __future__ import annotations

import functools

from django.db import connections, router, transaction
from django.db.models import Model
from django.db.models.sql import InsertQuery

from outbox.context import handling_current


def atomic(func=None):
    """``transaction.atomic`` for a service, as a decorator or a context manager, without the
    savepoint when it runs inside a handler's run (the module's docstring says why)."""
    if func is None:
        return _atomic_block()

    @functools.wraps(func)
    def inner(*args, **kwargs):
        with _atomic_block():
            return func(*args, **kwargs)

    return inner


def _atomic_block():
    return transaction.atomic(savepoint=handling_current() is None)


def insert_or_nothing(obj: Model) -> bool:
    """Insert ``obj`` unless the row would violate a unique constraint; True (and ``obj.pk``
    set) when it was inserted, False when a row in its way exists (nothing written, no error, so
    no savepoint is needed to go on). Any other violation (a check, not null) raises as in
    ``save()``. The model's primary key is its auto field; its fields' ``pre_save``
    (``auto_now_add``) runs as in ``save()``. Unlike ``save()``, it sends no signals.

    ``ON CONFLICT DO NOTHING`` on both backends (SQLite's own ``INSERT OR IGNORE``, which
    Django would write, also swallows check and not-null violations). On PostgreSQL an insert
    that meets a concurrent transaction's uncommitted row waits for it, as ``save()`` does."""
    using = router.db_for_write(type(obj), instance=obj)
    connection = connections[using]
    fields = _insert_fields(type(obj))
    values = [field.pre_save(obj, True) for field in fields]
    if any(hasattr(value, "resolve_expression") for value in values) or any(
        hasattr(field, "get_placeholder") for field in fields
    ):
        # An expression, or a field with a placeholder of its own: the ORM's statement.
        statement, params = _insert_compiled(obj, fields, using)
    else:
        statement = _insert_sql(type(obj), using)
        params = [
            field.get_db_prep_save(value, connection)
            for field, value in zip(fields, values, strict=True)
        ]
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding = False
    obj._state.db = using
    return True


@functools.lru_cache(maxsize=256)
def _insert_fields(model) -> tuple:
    meta = model._meta
    return tuple(
        f for f in meta.local_concrete_fields if f is not meta.auto_field and not f.generated
    )


def _insert_compiled(obj: Model, fields, using: str) -> tuple[str, list]:
    """The ORM's ``INSERT ... RETURNING`` for ``obj`` with ``ON CONFLICT DO NOTHING`` put in."""
    query = InsertQuery(type(obj))
    query.insert_values(list(fields), [obj])
    compiler = query.get_compiler(using=using)
    compiler.returning_fields = [obj._meta.pk]
    ((sql, params),) = compiler.as_sql()
    head, returning, tail = sql.rpartition(" RETURNING ")
    if not returning:
        raise NotImplementedError(f"{connections[using].vendor} cannot return an inserted row")
    return f"{head} ON CONFLICT DO NOTHING{returning}{tail}", list(params)


@functools.lru_cache(maxsize=256)
def _insert_sql(model, using: str) -> str:
    """``insert_or_nothing``'s statement for ``model``, written once (by the ORM, from an
    unsaved instance's placeholders): compiling it on every call cost more CPU than the insert
    (issue 12). The parameters are each field's ``get_db_prep_save``, as the ORM's."""
    meta = model._meta
    quote = connections[using].ops.quote_name
    fields = _insert_fields(model)
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    return (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "
        f"ON CONFLICT DO NOTHING RETURNING {quote(meta.pk.column)}"
    )

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
    meta = obj._meta
    using = router.db_for_write(type(obj), instance=obj)
    fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field and not f.generated]
    query = InsertQuery(type(obj))
    query.insert_values(fields, [obj])
    compiler = query.get_compiler(using=using)
    compiler.returning_fields = [meta.pk]
    ((sql, params),) = compiler.as_sql()
    head, returning, tail = sql.rpartition(" RETURNING ")
    if not returning:
        raise NotImplementedError(f"{connections[using].vendor} cannot return an inserted row")
    with connections[using].cursor() as cursor:
        cursor.execute(f"{head} ON CONFLICT DO NOTHING{returning}{tail}", params)
        row = cursor.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding = False
    obj._state.db = using
    return True

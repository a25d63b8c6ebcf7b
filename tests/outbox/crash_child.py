"""A worker or relay process for the crash tests: ``python -m tests.outbox.crash_child handle ID``,
``... run ID,ID,...`` (a ``deliver`` message's task body) or ``... relay``, on the test run's
database and broker, killed or held at the fault point that ``SHOP_TEST_FAULT`` names
(tests/testapp/faults.py). It prints the outcome when it survives.

Fault points, each seen from outside the engine (the statements it sends, the messages it
publishes), so that they stay where they are whatever the engine's code looks like:

* ``after_handler_writes``: the counting subscriber has written its row (tests/testapp);
* ``done_mark``: the statement that marks a delivery done has run, its transaction not yet
  committed (on PostgreSQL that statement is also the delivery's lock, sent before the
  handler runs; elsewhere the ``UPDATE`` after it);
* ``claim``: the relay's claim statement has run, its transaction not yet committed;
* ``before_send`` / ``after_send``: a ``deliver`` message is about to go / has gone to the broker.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = os.environ["SHOP_TEST_DB_NAME"]
    import django

    django.setup()
    from celery import signals
    from django.db import connection

    from outbox.models import Delivery
    from shop.celery import app as celery_app
    from tests.testapp.faults import fault_point

    celery_app.conf.broker_transport_options = json.loads(
        os.environ.get("SHOP_TEST_BROKER_OPTIONS", "{}")
    )
    table = Delivery._meta.db_table

    def watch(execute, sql, params, many, context):
        statement = sql.lstrip().upper()
        # The relay's claim on PostgreSQL is "WITH picked AS MATERIALIZED (...) UPDATE ...",
        # the worker's lock that marks done "WITH p AS MATERIALIZED (...) UPDATE ...".
        if (statement.startswith("UPDATE") or "UPDATE" in statement) and table in sql:
            if "dispatched_at = statement_timestamp()" in sql or (
                "dispatched_at" in sql and "SET" in statement and "RETURNING" not in statement
            ):
                result = execute(sql, params, many, context)
                fault_point("claim")
                return result
            if Delivery.Status.DONE in (params or ()):
                result = execute(sql, params, many, context)
                fault_point("done_mark")
                return result
        return execute(sql, params, many, context)

    def before_send(sender=None, **kwargs):
        if sender == "outbox.deliver":
            fault_point("before_send")

    def after_send(sender=None, **kwargs):
        if sender == "outbox.deliver":
            fault_point("after_send")

    signals.before_task_publish.connect(before_send, weak=False)
    signals.after_task_publish.connect(after_send, weak=False)

    with connection.execute_wrapper(watch):
        if argv[0] == "handle":
            from outbox.handling import delivery_handle

            print(delivery_handle(delivery_id=int(argv[1])), flush=True)
        elif argv[0] == "run":
            from outbox.continuation import deliveries_run

            deliveries_run([int(pk) for pk in argv[1].split(",")])
            print("ran", flush=True)
        elif argv[0] == "relay":
            from outbox.relay import relay_run

            print(relay_run(), flush=True)
        else:
            raise SystemExit(f"unknown action {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

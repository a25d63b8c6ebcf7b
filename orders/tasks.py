"""Orders' periodic work, sent by beat (its schedule is in orders/migrations)."""

from celery import shared_task

from orders.services import order_deadlines_fire, order_deadlines_purge


@shared_task(name="orders.deadlines_fire", queue="orders", ignore_result=True)
def deadlines_fire() -> int:
    """Fire due saga deadlines. Safe to run twice or concurrently: each deadline is fired once,
    on its locked row."""
    return order_deadlines_fire()


@shared_task(name="orders.deadlines_purge", queue="orders", ignore_result=True)
def deadlines_purge() -> int:
    """Delete the deadline rows of orders that ended longer ago than the retention window."""
    return order_deadlines_purge()

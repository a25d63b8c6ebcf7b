"""The plain-Celery baseline: a no-op task sent per event with .delay() or delay_on_commit()."""

from celery import shared_task

from bench.benchapp.record import handler_started


@shared_task(name="bench.noop", queue="bench", ignore_result=True)
def noop(tag: str, seq: int) -> None:
    handler_started(tag, seq)

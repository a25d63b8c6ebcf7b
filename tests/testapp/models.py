from django.db import models


class Effect(models.Model):
    """One row per handler run that committed: what the tests count to prove exactly-once."""

    subscriber = models.CharField(max_length=200)
    event_id = models.UUIDField()
    aggregate_id = models.CharField(max_length=100)
    seq = models.IntegerField(default=0)
    attempt = models.IntegerField(default=0)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.subscriber} handled {self.event_id} (attempt {self.attempt})"


class HandlerRun(models.Model):
    """One row per committed run of a counting subscriber, and nothing else: no unique key, no
    check of its own. A handler that ran twice for one event leaves two rows, so exactly-once is
    measured here rather than inferred from handlers that happen to be idempotent."""

    subscriber = models.CharField(max_length=200)
    event_id = models.UUIDField(db_index=True)

    def __str__(self) -> str:
        return f"{self.subscriber} ran for {self.event_id}"

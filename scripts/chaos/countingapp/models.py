from django.db import models


class CountedRun(models.Model):
    """One row per committed run of a counting handler. No uniqueness, on purpose: two rows for
    one (event, subscriber) are the double effect the outbox promises never happens."""

    subscriber = models.CharField(max_length=200)
    event_id = models.UUIDField(db_index=True)
    event_type = models.CharField(max_length=200)
    attempt = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.subscriber} ran for {self.event_id} (attempt {self.attempt})"

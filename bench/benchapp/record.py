"""Where handlers and tasks note that they started: one Redis round trip, nothing else.

The outbox handler and the plain Celery task call the same function, so both sides of the
end-to-end comparison do exactly the same work in their bodies.
"""

from __future__ import annotations

import os
import time

_client = None


def _redis():
    global _client
    url = os.environ.get("BENCH_RECORD_REDIS_URL")
    if not url:
        return None
    if _client is None:
        import redis

        # Created lazily, so each prefork child opens its own connection after the fork.
        _client = redis.Redis.from_url(url)
    return _client


def handler_started(tag: str, seq: int) -> None:
    started = time.time()
    client = _redis()
    if client is None:
        return
    pipe = client.pipeline(transaction=False)
    pipe.hset(f"bench:start:{tag}", str(seq), repr(started))
    pipe.incr(f"bench:runs:{tag}")
    pipe.execute()

"""The process harness shared by `make bench` (bench/) and `make chaos` (scripts/chaos/).

It runs the shop's processes as the Procfile declares them, the way a process manager would,
so that both tools attack and measure exactly what `make run` starts:

- ``procfile``: the Procfile's process types (and any second Procfile, such as a split one),
  each with its command and its own environment; the ``release`` entry;
- ``processes``: one running instance in a session (process group) of its own, its process
  tree, its logs; ``Supervisor`` starts numbered instances, waits for readiness, kills, stops,
  restarts, and watches for instances that exit by themselves;
- ``services``: the PostgreSQL server and a database of the run's own, a private PostgreSQL
  cluster (initdb, pg_ctl), a private Redis, a free port;
- ``latency_proxy``: a bounded asyncio TCP proxy whose latency can be turned on and off (the
  chaos run's slow database).

Nothing here imports Django or the shop: a caller that wants a Celery worker's readiness passes
its Celery app.
"""

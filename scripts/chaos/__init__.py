"""The chaos run behind `make chaos` (entry point: scripts/chaos.py; guide: docs/chaos.md).

- ``procs``: the Procfile's processes, each in its own process group, with their logs;
- ``services``: the private Redis, the run's PostgreSQL database, a PostgreSQL restart;
- ``load``: customers placing orders over HTTP, with idempotent retries;
- ``faults``: the fault plan and the thread that carries it out;
- ``checks``: waiting for quiet, the invariants, the summary;
- ``run``: the command line and the order of things.
"""

"""The chaos run behind `make chaos` (entry point: scripts/chaos.py; guide: docs/chaos.md).

- the processes and services come from the shared harness (``harness/``): the Procfile's
  processes under a supervisor, the private Redis, the run's PostgreSQL database;
- ``load``: customers placing orders over HTTP, with idempotent retries;
- ``faults``: the fault plan and the thread that carries it out;
- ``checks``: waiting for quiet, the invariants, the summary;
- ``run``: the command line and the order of things.
"""

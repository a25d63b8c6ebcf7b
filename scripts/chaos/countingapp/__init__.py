"""The chaos run's counting subscriber: exactly-once measured, not inferred.

Every shop handler is idempotent on its own, so a second run of one changes nothing the chaos
checks can see. The subscribers here are deliberately not: each run of a handler that commits
adds a row (``CountedRun``), with no deduplication of its own. At the end of the run, every
event in the store must have exactly one row per counting subscriber: a second row is a handler
effect that happened twice (the outbox's guarantee 2 broken), a missing one a lost delivery.

Installed only when SHOP_CHAOS_APPS=1, which `make chaos` sets for every process it starts
(with scripts/ on their PYTHONPATH, where this package lives as ``chaos.countingapp``).
"""

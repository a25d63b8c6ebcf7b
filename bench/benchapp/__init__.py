"""The benchmark's own Django app: a bench-only event, its no-op handler, a plain no-op task.

Installed only when SHOP_BENCH_APPS=1 (the harness sets it for every process it starts), so
the shop's own event types never get a benchmark subscriber.
"""

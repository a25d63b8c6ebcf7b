"""The consuming service's side of the cross-database latency scenario (bench/bus_latency.py):
a subscriber to ``bench.RemotePing`` that only notes its start.

Installed only when SHOP_BENCH_BUS_CONSUMER=1 (the scenario sets it for service B alone), so
the publishing service never has a local subscriber for the event: its one delivery is the bus.
"""

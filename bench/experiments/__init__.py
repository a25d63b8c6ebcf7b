"""Settings variants for A/B runs (`bench/run.py --settings bench.experiments.<name>`).

Each is shop.settings plus one change that docs/benchmarks.md proposes, so that its effect
is measured before anyone edits the shop. None of them is used outside the benchmark.
"""

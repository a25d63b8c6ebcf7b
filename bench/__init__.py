"""The benchmark harness: `make bench` (bench/run.py). See docs/benchmarks.md."""

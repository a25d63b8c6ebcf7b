import os

from django.apps import AppConfig


class BenchappConfig(AppConfig):
    name = "bench.benchapp"
    label = "benchapp"
    verbose_name = "Benchmark (bench-only events and no-op handlers)"

    def ready(self) -> None:
        if os.environ.get("BENCH_COUNT") == "1":
            from bench.benchapp.counting import install

            install()

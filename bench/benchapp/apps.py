from django.apps import AppConfig


class BenchappConfig(AppConfig):
    name = "bench.benchapp"
    label = "benchapp"
    verbose_name = "Benchmark (bench-only events and no-op handlers)"

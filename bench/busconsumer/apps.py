from django.apps import AppConfig


class BusConsumerConfig(AppConfig):
    name = "bench.busconsumer"
    label = "benchbusconsumer"
    verbose_name = "Benchmark (the consuming service's RemotePing subscriber)"

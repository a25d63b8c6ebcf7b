from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "shop.observability"
    label = "observability"
    verbose_name = "Observability (metrics, tracing, logs, health)"

    def ready(self) -> None:
        from celery import signals

        from shop.observability import checks  # noqa: F401  (registers the deploy checks)
        from shop.observability.logs import celery_setup_logging
        from shop.observability.metrics import multiproc_dir, multiproc_dir_prepare
        from shop.observability.tracing import tracing_configure, tracing_flush

        # Before this process counts anything: see multiproc_dir_prepare.
        path = multiproc_dir()
        if path is not None:
            multiproc_dir_prepare(path)
        tracing_configure()
        # Celery configures no logging of its own when setup_logging has a receiver.
        signals.setup_logging.connect(celery_setup_logging, weak=False)
        signals.worker_process_shutdown.connect(tracing_flush, weak=False)

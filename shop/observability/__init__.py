"""Observability of the shop: Prometheus metrics, OpenTelemetry tracing, structured logs and
health checks. Operators' guide: ``docs/operations.md``."""

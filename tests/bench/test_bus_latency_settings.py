"""`bench/run.py --ab` with the cross-database latency scenario: B's settings module reaches
every process of both services (their consumer, relay and worker), not only the producers. Until
2026-12-01 it reached the producers alone, and an A/B of `bus_latency` compared A with A."""

from __future__ import annotations

from types import SimpleNamespace

from bench import bus_latency


def started_env(settings_module: str | None, tmp_path) -> dict:
    bench = SimpleNamespace(concurrency=2, run_dir=tmp_path, settings_module=settings_module)
    supervisor = bus_latency._supervisor(
        bench, {"DJANGO_SETTINGS_MODULE": "shop.settings"}, "logs/b", celery_app=None
    )
    env = dict(supervisor.env)
    env.update(supervisor.env_for("consumer"))
    return env


def test_an_ab_runs_both_services_processes_on_the_b_settings(tmp_path):
    env = started_env("bench.experiments.no_consumer_run", tmp_path)
    assert env["DJANGO_SETTINGS_MODULE"] == "bench.experiments.no_consumer_run"


def test_without_ab_the_processes_keep_the_benchs_settings(tmp_path):
    assert started_env(None, tmp_path)["DJANGO_SETTINGS_MODULE"] == "shop.settings"

"""Adding an app touches few places (docs/architecture.md, "Adding an app"), and forgetting one
of them fails here instead of going unnoticed. The import contracts and the worker's queues
have their own tests (tests/test_import_contracts.py, tests/outbox/test_queues.py)."""

from __future__ import annotations

import io
import tomllib

from django.apps import apps
from django.core.management import call_command

from bench.system import RESET_PREFIXES
from tests.test_import_contracts import ROOT, domain_apps, local_apps

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_local_app_is_copied_for_mutation_testing():
    """make mutate copies source_paths into mutants/: an app left out cannot be imported there."""
    packages = {name.split(".")[0] for name in local_apps()}
    assert packages <= set(PYPROJECT["tool"]["mutmut"]["source_paths"])


def test_the_benchmark_empties_every_table_of_every_domain_app():
    """A table the bench's reset misses keeps the previous run's rows."""
    missed = [
        model._meta.db_table
        for app in domain_apps()
        for model in apps.get_app_config(app.split(".")[-1]).get_models()
        if not model._meta.db_table.startswith(RESET_PREFIXES)
    ]
    assert not missed, missed


def test_every_model_change_has_its_migration(db):
    """A new app (or model change) without its migration would have no table in production."""
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()

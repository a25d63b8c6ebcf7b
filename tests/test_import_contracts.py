"""The import-linter contracts (pyproject.toml) cover every local app, and each one can fail:
an import it forbids, planted in a scratch copy of the tree, makes `lint-imports` report it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from django.apps import apps

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {c["id"]: c for c in CONFIG["contracts"]}
HOST, LIBRARY = "shop", "outbox"


def local_apps() -> list[str]:
    """Installed apps whose code is this project's own (not the suite's or the benchmark's)."""
    venv = Path(sys.prefix).resolve()
    return [
        config.name
        for config in apps.get_app_configs()
        if Path(config.path).resolve().is_relative_to(ROOT)
        and not Path(config.path).resolve().is_relative_to(venv)
        and config.name.split(".")[0] not in ("tests", "bench")
    ]


def domain_apps() -> list[str]:
    return [name for name in local_apps() if name.split(".")[0] not in (HOST, LIBRARY)]


def test_every_local_app_is_a_root_package_and_every_domain_app_is_in_every_contract():
    assert {name.split(".")[0] for name in local_apps()} <= set(CONFIG["root_packages"])
    covered_by = {
        "outbox-library": CONTRACTS["outbox-library"]["forbidden_modules"],
        "apps-through-events": CONTRACTS["apps-through-events"]["modules"],
        "apps-through-events (ignore_imports)": [
            line.removeprefix("** -> ").removesuffix(".events")
            for line in CONTRACTS["apps-through-events"]["ignore_imports"]
        ],
        "events-leaf": CONTRACTS["events-leaf"]["containers"],
        "outbox-public-surface": CONTRACTS["outbox-public-surface"]["source_modules"],
        "apps-not-host": CONTRACTS["apps-not-host"]["source_modules"],
    }
    missing = [
        f"{app} is missing from {contract}"
        for contract, modules in covered_by.items()
        for app in domain_apps()
        if app not in modules
    ]
    assert not missing, missing
    assert set(domain_apps()) == {"orders", "payments", "inventory", "shipping", "notifications"}


# One import per contract, each forbidden by that contract alone, and a module no layer lists.
PLANTED = {
    "outbox-library": ("outbox/errors.py", "import orders.models", "outbox.errors -> orders"),
    "apps-through-events": (
        "payments/services.py",
        "import orders.models",
        "payments.services -> orders.models",
    ),
    "events-leaf": ("shipping/events.py", "import shipping.models", "shipping.events -> shipping"),
    "outbox-public-surface": (
        "inventory/services.py",
        "import outbox.ops",
        "inventory.services -> outbox.ops",
    ),
    "apps-not-host": ("orders/services.py", "import shop.api", "orders.services -> shop.api"),
}


def test_each_contract_fails_when_the_import_it_forbids_is_planted(tmp_path):
    for package in CONFIG["root_packages"]:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)

    def lint() -> subprocess.CompletedProcess:
        return subprocess.run(
            [Path(sys.executable).parent / "lint-imports", "--no-cache"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    clean = lint()
    assert clean.returncode == 0, clean.stdout + clean.stderr  # the copy passes as it is

    for path, line, _ in PLANTED.values():
        with open(tmp_path / path, "a") as f:
            f.write(f"\n{line}  # planted\n")
    (tmp_path / "payments" / "planted.py").write_text('"""A module no layer lists."""\n')
    run = lint()
    assert run.returncode != 0
    report = " ".join(run.stdout.split())  # import-linter wraps long lines
    for contract_id, (_, _, chain) in PLANTED.items():
        assert f"{' '.join(CONTRACTS[contract_id]['name'].split())} BROKEN" in report, contract_id
        assert chain in report, chain
    assert f"Contracts: 0 kept, {len(CONTRACTS)} broken." in report
    assert "payments.planted" in report  # the events-leaf contract lists every module

"""Schemathesis as a client runs it: ``schemathesis run --checks all`` against the application
served over HTTP (pytest-django's live server, on the test database), for a customer, a staff
user and an anonymous caller. Every phase runs (examples, coverage, fuzzing, and the stateful
phase, which follows the links it infers between operations), every check is on, and the run
must end with no failure and every operation tested. Operations are read from the schema, so a
new endpoint is covered without an edit here.

The examples per operation are bounded (``MAX_EXAMPLES``) and it runs in the SQLite pass only
(the contract does not depend on the database; the PostgreSQL pass still runs
test_schemathesis.py, every check in process): a run takes minutes, not seconds. The seed is
fixed so that a failure can be replayed. The hook module gives valid orders catalogued skus.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.fuzz.helpers import CATALOGUE
from tests.security.credentials import api_token, grant
from tests.support import is_postgres

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 5
SEED = "20261130"


def schemathesis_run(url: str, headers: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/api/schema/"]
    command += ["--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", SEED]
    command += ["--no-color", "--workers", "1", "--generation-database", "none"]
    if headers:
        # Logging out revokes the very token the run authenticates with, and every later case
        # would be an anonymous one: the callers with a token leave those two operations to
        # the anonymous run and to tests/security/test_tokens.py.
        command += ["--exclude-path-regex", "^/api/auth/logout"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.fuzz.schemathesis_hooks",
        "SHOP_FUZZ_SKUS": ",".join(sorted(CATALOGUE)),
    }
    return subprocess.run(
        command, capture_output=True, text=True, timeout=840, env=env, cwd=cwd, check=False
    )


STAFF_PERMISSIONS = (
    "inventory.add_product",
    "inventory.change_product",
    "orders.view_any_order",
    "orders.view_order_machinery",
    "orders.change_order",
)


@pytest.fixture
def caller_headers(request, catalogue):
    if request.param == "anonymous":
        return {}
    user = get_user_model().objects.create_user(
        f"st-{request.param}", password="pw-st-123", is_staff=request.param == "staff"
    )
    if request.param == "staff":
        # Staff as the roles have it (shop/permissions.py): catalogue writes and the operator's.
        user = grant(user, *STAFF_PERMISSIONS)
    return {"Authorization": f"Token {api_token(user)}"}


@pytest.mark.timeout(900)
@pytest.mark.skipif(is_postgres(), reason="the contract does not depend on the database: once")
@pytest.mark.parametrize(
    "caller_headers", ["customer", "staff", "anonymous"], indirect=True, ids=str
)
def test_schemathesis_with_every_check_finds_nothing(live_server, caller_headers, tmp_path):
    result = schemathesis_run(live_server.url, caller_headers, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-3000:]
    # No operation skipped: every operation of the schema is tested, but the two logouts that
    # the callers with a token leave out (see schemathesis_run).
    excluded = 2 if caller_headers else 0
    assert int(selected[2]) - int(selected[1]) == excluded, output[-3000:]
    assert selected[1] == tested[1], output[-3000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅\s+{phase}", output), (phase, output[-3000:])

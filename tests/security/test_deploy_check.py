"""Production settings pass Django's deployment checklist, and refuse to start without a real
secret. Run as subprocesses: settings are read once per process, from the environment.

Every configuration below is its own process, each run once; a module-scoped fixture starts them
all at the module's first test, a few at a time (they are independent: each has its own
environment, secrets and var/ folders), and each test asserts on its own configuration's result.
"""

import os
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def manage(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        key: value
        for key, value in os.environ.items()
        # the suite's own switches (pytest-env) are no part of a production environment
        if not key.startswith(("DJANGO_", "SHOP_", "OUTBOX_", "PYTEST"))
    }
    environment.update(
        SHOP_VAR_DIR=str(tmp_path / "var"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS="shop.example.com",
        METRICS_TOKEN=secrets.token_urlsafe(32),
        EVENT_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
    )
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )


CHECK_DEPLOY = ("check", "--deploy", "--fail-level", "WARNING")
SECURE_SETTINGS = (
    "from django.conf import settings as s; "
    "print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
    "s.SECURE_HSTS_SECONDS >= 31536000, s.SESSION_COOKIE_HTTPONLY, s.X_FRAME_OPTIONS, "
    "s.ALLOWED_HOSTS)"
)
PROXY_SETTINGS = (
    "from django.conf import settings as s; print(s.SECURE_PROXY_SSL_HEADER, s.API_DOCS_PUBLIC)"
)
DEVELOPMENT_KEY = "from django.conf import settings as s; print(s.EVENT_ENCRYPTION_KEYS[0])"
PROXIES = [("", "None"), ("0", "None"), ("1", "('HTTP_X_FORWARDED_PROTO', 'https')")]
WEAK_SECRETS = ["", "too-short", "dev-only-insecure-secret-key-never-use-in-production"]
RATES = ["ten/min", "10/fortnight", "10"]
EVENT_KEYS = [
    ("", "EVENT_ENCRYPTION_KEYS must be set when DJANGO_DEBUG is off"),
    ("not-a-fernet-key", "EVENT_ENCRYPTION_KEYS: key 1 of 1 is not a Fernet key"),
    (
        f"{Fernet.generate_key().decode()},tooshort",
        "EVENT_ENCRYPTION_KEYS: key 2 of 2 is not a Fernet key",
    ),
]

# Every configuration: its name, manage.py's arguments and the environment it changes.
CONFIGURATIONS = {
    "deploy": (CHECK_DEPLOY, {}),
    "secure": (("shell", "-c", SECURE_SETTINGS), {}),
    **{
        ("proxy", behind): (("shell", "-c", PROXY_SETTINGS), {"DJANGO_BEHIND_PROXY": behind})
        for behind, _ in PROXIES
    },
    **{("secret", secret): (("check",), {"DJANGO_SECRET_KEY": secret}) for secret in WEAK_SECRETS},
    "no-metrics-token": (CHECK_DEPLOY, {"METRICS_TOKEN": ""}),
    "short-metrics-token": (("check",), {"METRICS_TOKEN": "short"}),
    **{("rate", rate): (("check",), {"THROTTLE_RATE_ORDERS": rate}) for rate in RATES},
    **{("keys", keys): (("check",), {"EVENT_ENCRYPTION_KEYS": keys}) for keys, _ in EVENT_KEYS},
    "development": (
        ("shell", "-c", DEVELOPMENT_KEY),
        {"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": "", "EVENT_ENCRYPTION_KEYS": ""},
    ),
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Each configuration's process, all started at once (a few at a time); ``ran(name)`` waits
    for that one's result."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        futures = {
            name: pool.submit(manage, tmp_path_factory.mktemp("manage"), *args, **env)
            for name, (args, env) in CONFIGURATIONS.items()
        }
        yield lambda name: futures[name].result()


def test_check_deploy_passes_with_production_settings(ran):
    result = ran("deploy")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output


def test_production_settings_are_the_secure_ones(ran):
    result = ran("secure")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == (
        "False True True True True True DENY ['shop.example.com']"
    )


@pytest.mark.parametrize(("behind_proxy", "expected"), PROXIES)
def test_the_proxy_header_is_trusted_only_behind_a_proxy(ran, behind_proxy, expected):
    result = ran(("proxy", behind_proxy))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == f"{expected} False"


@pytest.mark.parametrize("secret", WEAK_SECRETS, ids=["missing", "short", "the-development-key"])
def test_production_refuses_a_weak_secret_key(ran, secret):
    result = ran(("secret", secret))
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_check_deploy_warns_when_metrics_have_no_token(ran):
    result = ran("no-metrics-token")
    assert result.returncode != 0
    assert "shop.W001" in result.stderr + result.stdout


def test_a_short_metrics_token_is_refused_at_start(ran):
    result = ran("short-metrics-token")
    assert result.returncode != 0
    assert "METRICS_TOKEN must be at least 32 characters" in result.stderr


@pytest.mark.parametrize("rate", RATES)
def test_a_malformed_throttle_rate_is_refused_at_start(ran, rate):
    result = ran(("rate", rate))
    assert result.returncode != 0
    assert "THROTTLE_RATE_ORDERS" in result.stderr


@pytest.mark.parametrize(
    ("keys", "message"), EVENT_KEYS, ids=["missing", "malformed", "second-malformed"]
)
def test_production_refuses_missing_or_malformed_event_keys(ran, keys, message):
    result = ran(("keys", keys))
    assert result.returncode != 0
    assert message in result.stderr


def test_production_refuses_the_development_event_key(ran, tmp_path):
    development = ran("development")
    assert development.returncode == 0, development.stderr
    dev_key = development.stdout.split("\n")[-2]
    Fernet(dev_key)  # debugging (make run, the tests) works with no key set
    result = manage(tmp_path, "check", EVENT_ENCRYPTION_KEYS=dev_key)
    assert result.returncode != 0
    assert "EVENT_ENCRYPTION_KEYS must not hold the development key" in result.stderr

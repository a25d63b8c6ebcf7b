"""EMAIL_URL chooses the mail backend: SMTP where given, files in var/mail/ by default (nothing
to install, each message readable), and a clear refusal for a scheme nobody reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
READ = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps([s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_USE_TLS, "
    "s.EMAIL_TIMEOUT, str(getattr(s, 'EMAIL_FILE_PATH', ''))]))"
)


def settings_with(email_url: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("EMAIL_URL", "SHOP_VAR_DIR")}
    env["DJANGO_SETTINGS_MODULE"] = "shop.settings"
    if email_url is not None:
        env["EMAIL_URL"] = email_url
    return subprocess.run(
        [sys.executable, "-c", READ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, ["django.core.mail.backends.filebased.EmailBackend", "localhost", 25, False, 10]),
        (
            "smtp://127.0.0.1:2525",
            ["django.core.mail.backends.smtp.EmailBackend", "127.0.0.1", 2525, False, 10],
        ),
        (
            "submission://mailer:s3cret@mail.example.com",
            ["django.core.mail.backends.smtp.EmailBackend", "mail.example.com", 587, True, 10],
        ),
    ],
)
def test_email_url_configures_the_backend(url, expected):
    run = settings_with(url)
    assert run.returncode == 0, run.stderr
    backend = json.loads(run.stdout)
    assert backend[:5] == expected
    if url is None:
        assert backend[5] == str(ROOT / "var" / "mail")


def test_an_unknown_email_url_scheme_stops_the_process():
    run = settings_with("smpt://127.0.0.1:2525")
    assert run.returncode != 0
    assert "EMAIL_URL='smpt://127.0.0.1:2525': use smtp://" in run.stderr

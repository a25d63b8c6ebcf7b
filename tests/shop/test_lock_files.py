"""The lock files are what `make` installs: they must hold every direct pin of
requirements*.txt at the same version, and a hash for every package. A pin changed without
`make lock` fails here, not on a machine that installs something else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(direct_pins(path.parent / line[3:].strip()))
        elif line:
            match = PIN.match(line)
            assert match, f"{path.name}: {line!r} is not pinned with =="
            pins[canonical(match[1])] = match[2]
    return pins


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes)"""
    packages: dict[str, tuple[str, int]] = {}
    current = None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonical(match[1])
            packages[current] = (match[2], 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = packages[current]
            packages[current] = (version, hashes + 1)
    return packages


@pytest.mark.parametrize(
    ("requirements", "lock"),
    [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")],
)
def test_every_direct_pin_is_locked_at_its_version_with_hashes(requirements, lock):
    pins = direct_pins(ROOT / requirements)
    packages = locked(ROOT / lock)
    missing = {name: version for name, version in pins.items() if name not in packages}
    assert not missing, f"not in {lock} (run `make lock`): {missing}"
    stale = {
        name: (version, packages[name][0])
        for name, version in pins.items()
        if packages[name][0] != version
    }
    assert not stale, f"{lock} locks other versions (run `make lock`): {stale}"
    unhashed = [name for name, (_, hashes) in packages.items() if hashes == 0]
    assert not unhashed, f"{lock} has packages without a hash: {unhashed}"


def test_the_lock_names_no_index_or_local_path():
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text()
        assert "--index-url" not in text and "--find-links" not in text
        assert "file://" not in text

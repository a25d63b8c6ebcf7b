"""`make mutate`: mutation testing of the engine (outbox/) and the payments and inventory services.

Runs mutmut (configured in pyproject.toml, [tool.mutmut]) on the database and broker the
environment names (SQLite and the embedded broker by default: the PostgreSQL-only statements are
then left without tests, see docs/outbox.md), one mutant at a time (the machine is shared; set
MUTATE_JOBS to change it), then writes the report to var/mutate/report.txt: per module the
mutants killed, survived, without a test, timed out; the score; and every survivor by name.

Each run starts from a new test database: the one pytest-django keeps between mutants
(--reuse-db) could hold rows that a mutant killed mid-test (a timeout) committed, and a later
test failing on them would count as a kill.

    make mutate                                 # every module of [tool.mutmut] only_mutate
    make mutate ARGS='"outbox.handling*"'       # only the mutants whose names match

Slow (minutes per module): outside CI, never part of `make test`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "var" / "mutate" / "report.txt"
MUTMUT = [sys.executable, "-m", "mutmut"]


# Run inside mutants/ (mutmut's copy, which names its own test database after that checkout).
_TEST_DB_DROP = """
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
import django
django.setup()
from django.db import connection
try:
    connection.creation._destroy_test_db(connection.creation._get_test_db_name(), verbosity=0)
except Exception:
    pass  # none yet
"""


def database_fresh() -> None:
    if (ROOT / "mutants" / "manage.py").exists():
        subprocess.run([sys.executable, "-c", _TEST_DB_DROP], cwd=ROOT / "mutants", check=True)


def results() -> list[tuple[str, str]]:
    out = subprocess.run(
        [*MUTMUT, "results", "--all", "true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = []
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found.append((name, status))
    return found


def module_of(mutant: str) -> str:
    # outbox.handling.x_delivery_handle__mutmut_12 -> outbox.handling
    return mutant.split(".x")[0] if ".x" in mutant else mutant.rsplit(".", 1)[0]


def report(found: list[tuple[str, str]], selected: list[str]) -> str:
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for name, status in found:
        by_module[module_of(name)][status] += 1
        if status == "survived":
            survivors.append(name)
    lines = [f"mutmut over: {' '.join(selected) or 'every module of [tool.mutmut] only_mutate'}"]
    lines.append(f"{'module':32} {'killed':>7} {'survived':>9} {'no tests':>9} {'other':>6} score")
    for module, counts in sorted(by_module.items()):
        if counts["not checked"] == sum(counts.values()):
            continue  # not selected by this run
        killed = counts["killed"] + counts["timeout"] + counts["caught by type check"]
        tested = killed + counts["survived"]
        other = sum(counts.values()) - tested - counts["no tests"]
        score = f"{100 * killed / tested:.1f}%" if tested else "-"
        survived, untested = counts["survived"], counts["no tests"]
        lines.append(f"{module:32} {killed:7} {survived:9} {untested:9} {other:6} {score}")
    lines.append("score: killed (or timed out) / (killed + survived); 'no tests': no selected")
    lines.append("test calls the function on this backend")
    lines.append("")
    lines.append("survivors (mutmut show NAME):")
    lines += [f"  {name}" for name in survivors]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    jobs = os.environ.get("MUTATE_JOBS", "1")
    database_fresh()
    code = subprocess.call([*MUTMUT, "run", "--max-children", jobs, *argv], cwd=ROOT)
    text = report(results(), argv)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text)
    print(text)
    print(f"report written to {REPORT.relative_to(ROOT)}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

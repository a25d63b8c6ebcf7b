"""`make bench`: the outbox's figures on PostgreSQL + Redis, one table, and a JSON file.

    .venv/bin/python bench/run.py                 # full sizes, 3 runs of each scenario
    .venv/bin/python bench/run.py --smoke         # tiny sizes, 1 run (CI)
    .venv/bin/python bench/run.py --size 0.2 --only e2e,latency --profile

It creates a database of its own (shop_bench_<random>) on --postgres-url, migrates it, uses a
Redis database of its own (--redis-url, flushed before each run of each scenario), starts the
Procfile's processes (relay, worker with 2 processes, beat, web) for each run through the
shared harness (harness/), and drops the database at the end. docs/benchmarks.md explains each
figure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import secrets
import signal
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.measure import BenchError, json_dump  # noqa: E402
from bench.report import SCENARIO_TITLES, aggregate, machine_facts, table  # noqa: E402
from bench.system import (  # noqa: E402
    Bench,
    RedisDb,
    ServiceUnreachable,
    child_env,
    service_check,
)
from harness.errors import HarnessError  # noqa: E402
from harness.procfile import release_run  # noqa: E402
from harness.services import Database, PostgresServer  # noqa: E402

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny fixed sizes, 1 run each (CI)")
    p.add_argument("--size", type=float, default=None, help="scale every size (default 1)")
    p.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3)")
    p.add_argument("--only", default="", help="some of: " + ",".join(SCENARIO_TITLES))
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="server where shop_bench_<random> is created and dropped",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS),
        help="a Redis database of the bench's own: it is flushed",
    )
    p.add_argument(
        "--database-prefix",
        default=os.environ.get("BENCH_DATABASE_PREFIX", "shop_bench"),
        help="name of the database created and dropped: <prefix>_<random> (default shop_bench)",
    )
    p.add_argument("--producers", type=int, default=2, help="load-producing processes")
    p.add_argument(
        "--concurrency",
        type=int,
        default=int(os.environ.get("WORKER_CONCURRENCY") or 2),
        help="the worker's prefork processes",
    )
    p.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY") or 2))
    p.add_argument(
        "--settings",
        default="shop.settings",
        help="settings module for every process: an A/B experiment such as\n"
        "bench.experiments.new_connection_per_task (default shop.settings)",
    )
    p.add_argument(
        "--ab",
        default=None,
        metavar="SETTINGS",
        help="A/B in one invocation: every run of every scenario is run twice, with --settings\n"
        "(A) then with this settings module (B), for the processes the scenario starts and\n"
        "the producers (and the bench process's OUTBOX and database OPTIONS for publish)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the relay and worker")
    p.add_argument("--output", type=Path, default=None, help="JSON path (var/bench/<ts>.json)")
    p.add_argument("--note", default="", help="free text stored with the figures")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.smoke else 3
    if args.smoke and args.size is not None:
        p.error("--smoke has its own sizes; leave out --size")
    if args.size is None:
        args.size = 1.0
    unknown = {s for s in args.only.split(",") if s} - set(SCENARIO_TITLES)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    args.selected = [s for s in SCENARIO_TITLES if not args.only or s in args.only.split(",")]
    return args


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchRun:
    """One invocation, in its steps: prepare, measure each scenario, clean up, report."""

    def __init__(self, args: argparse.Namespace, postgres: PostgresServer, service_facts: dict):
        from bench.scenarios import Sizes

        self.args = args
        self.postgres = postgres
        self.service_facts = service_facts
        self.stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        out_dir = ROOT / "var" / "bench"
        self.run_dir = out_dir / self.stamp
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.output = args.output or out_dir / f"{self.stamp}.json"
        self.sizes = Sizes.smoke() if args.smoke else Sizes().scaled(args.size)
        self.redis_db = RedisDb(args.redis_url, out_dir)
        self.database: Database | None = None
        self.bench: Bench | None = None
        self.results: dict = {}
        self.results_b: dict = {}  # --ab: the B settings' runs
        self.report: dict = {}
        self.failed = self.interrupted = False

    def go(self) -> int:
        try:
            self.prepare()
            for scenario in self.args.selected:
                self.measure(scenario)
        except KeyboardInterrupt:
            self.failed = self.interrupted = True
            say("interrupted: the figures measured so far are kept")
        except (BenchError, HarnessError, ServiceUnreachable) as exc:
            self.failed = True
            say(str(exc))
        finally:
            self.clean_up()
        if not self.report:
            return 1
        self.write()
        return 1 if self.failed else 0

    # --- the steps --------------------------------------------------------------------------

    def prepare(self) -> None:
        """The Redis database locked, a database created and migrated, Django set up here."""
        args = self.args
        self.redis_db.acquire()
        self.database = Database(self.postgres, f"{args.database_prefix}_{secrets.token_hex(4)}")
        self.database.create()
        env = child_env(
            database_url=self.database.url,
            redis_url=args.redis_url,
            run_dir=self.run_dir,
            settings=args.settings,
        )
        os.environ.update(env)
        os.environ.pop("SHOP_TEST_APPS", None)
        say(f"database {self.database.name}, Redis {args.redis_url}, logs in {self.run_dir}")
        (self.run_dir / "logs").mkdir(exist_ok=True)
        self.bench = self._bench(env)
        release_run(
            self.bench.supervisor.procfile,
            env=env,
            cwd=ROOT,
            log=self.run_dir / "logs" / "migrate.log",
        )
        self.report = {
            "started_at": self.stamp,
            "argv": sys.argv[1:],
            "smoke": args.smoke,
            "size": args.size,
            "runs": args.runs,
            "sizes": dataclasses.asdict(self.sizes),
            "note": args.note,
            "settings_module": args.settings,
            # py-spy samples the processes: the figures of a profiled run are not comparable.
            "profiled": args.profile,
            "machine": {
                **machine_facts(args, self.redis_db.client, self.bench.supervisor.procfile),
                **self.service_facts,
            },
            "logs": str(self.run_dir),
        }

    def _bench(self, env: dict) -> Bench:
        import logging

        import django

        django.setup()
        logging.getLogger().setLevel(logging.WARNING)
        profile_dir = None
        if self.args.profile:
            profile_dir = self.run_dir / "profile"
            profile_dir.mkdir(exist_ok=True)
        return Bench(
            env=env,
            run_dir=self.run_dir,
            redis_db=self.redis_db,
            sizes=self.sizes,
            producers=self.args.producers,
            concurrency=self.args.concurrency,
            web_workers=self.args.web_workers,
            profile_dir=profile_dir,
        )

    def measure(self, scenario: str) -> None:
        """Every run of one scenario; then the JSON is rewritten, so that an interrupted long
        run keeps what it measured."""
        result = self.results[scenario] = {"runs": [], "errors": [], "checks_ok": True}
        if self.args.ab:
            self.results_b[scenario] = {"runs": [], "errors": [], "checks_ok": True}
        for run in range(self.args.runs):
            if self.args.ab:
                self._measure_b(scenario, run)
            say(f"{SCENARIO_TITLES[scenario]}: run {run + 1}/{self.args.runs}")
            outcome = self._run_once(scenario, run)
            if outcome is None:
                continue
            if outcome.get("checks_ok") is False:
                result["checks_ok"] = False
                say(f"{scenario} run {run + 1}: a correctness check failed (see the JSON)")
            result["runs"].append(outcome)
            shown = ", ".join(
                f"{k}={v:.4g}" for k, v in outcome["figures"].items() if v is not None
            )
            say(f"  {shown}")
        if not result["checks_ok"]:
            self.failed = True
        json_dump(
            self.output,
            {
                **self.report,
                "table": aggregate(self.results, self.sizes),
                "scenarios": self.results,
            },
        )

    def _measure_b(self, scenario: str, run: int) -> None:
        """One run with the B settings (--ab), before the A run of the same number; the two
        alternate, so that both see the machine's load alike."""
        result = self.results_b[scenario]
        say(f"{SCENARIO_TITLES[scenario]}: run {run + 1}/{self.args.runs}, B ({self.args.ab})")
        self.bench.settings_module = self.args.ab
        try:
            outcome = self._run_once(scenario, run, results=self.results_b)
        finally:
            self.bench.settings_module = None
        if outcome is None:
            return
        if outcome.get("checks_ok") is False:
            result["checks_ok"] = False
            self.failed = True
            say(f"{scenario} run {run + 1} (B): a correctness check failed (see the JSON)")
        result["runs"].append(outcome)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in outcome["figures"].items() if v is not None)
        say(f"  B: {shown}")

    def _run_once(self, scenario: str, run: int, results: dict | None = None) -> dict | None:
        from bench.scenarios import SCENARIOS

        began = time.monotonic()
        try:
            outcome = SCENARIOS[scenario](self.bench, run)
        except (BenchError, HarnessError) as exc:
            error = str(exc)
            say(f"{scenario} run {run + 1} failed: {exc}")
        except Exception:
            error = traceback.format_exc()
            say(f"{scenario} run {run + 1} crashed:\n{error}")
        else:
            outcome["seconds"] = round(time.monotonic() - began, 1)
            outcome["loadavg_1m"] = os.getloadavg()[0]
            return outcome
        self.failed = True
        (self.results if results is None else results)[scenario]["errors"].append(error)
        self.bench.stop()
        return None

    def clean_up(self) -> None:
        """The processes stopped, the database dropped, the Redis lock released."""
        if self.bench is not None:
            self.bench.stop()
        if self.database is not None:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            try:
                self.database.drop()
            except Exception as exc:
                say(f"could not drop database {self.database.name}: {exc}")
        self.redis_db.release()

    def write(self) -> None:
        """The JSON, complete, and the table."""
        args = self.args
        rows = aggregate(self.results, self.sizes)
        self.report.update(
            {
                "finished_at": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
                "loadavg_at_end": os.getloadavg(),
                "table": rows,
                "scenarios": self.results,
                "complete": set(self.results) == set(args.selected) and not self.interrupted,
                "ok": not self.failed,
            }
        )
        if args.ab:
            self.report["ab"] = {
                "settings_module": args.ab,
                "table": aggregate(self.results_b, self.sizes),
                "scenarios": self.results_b,
            }
        if args.profile and self.bench is not None and self.bench.profile_dir is not None:
            from bench.profile import summarise_dir

            self.report["profile"] = summarise_dir(self.bench.profile_dir)
        json_dump(self.output, self.report)
        title = (
            f"Outbox benchmark ({'smoke sizes' if args.smoke else f'size {args.size:g}'}, "
            f"{args.runs} run{'s' if args.runs > 1 else ''} each; median, min, max"
            f"{'; PROFILED, figures perturbed' if args.profile else ''}"
            f"{'; settings ' + args.settings if args.settings != 'shop.settings' else ''})"
        )
        print(f"\n{title}\n\n{table(rows)}\n")
        if args.ab:
            print(f"B: settings {args.ab}, same invocation, runs alternated with A's\n")
            print(f"{table(self.report['ab']['table'])}\n")
            if any(r["errors"] or not r["checks_ok"] for r in self.results_b.values()):
                print("B: an error or a failed check; see the JSON's ab key")
        for scenario, outcome in self.results.items():
            for error in outcome["errors"]:
                print(f"{scenario}: ERROR {error.strip().splitlines()[-1]}")
            if not outcome["checks_ok"]:
                print(f"{scenario}: a correctness check failed; see the JSON")
        print(f"figures and machine facts: {self.output}")


def main(argv=None) -> int:
    args = parse_args(argv)
    postgres = PostgresServer.from_url(args.postgres_url)
    try:
        service_facts = service_check(postgres, args.redis_url)
    except ServiceUnreachable as exc:
        print(
            f"bench: cannot run, a service is not reachable:\n{exc}\n"
            "Start PostgreSQL and Redis (see README), or point --postgres-url / --redis-url "
            "(BENCH_POSTGRES_URL / BENCH_REDIS_URL) at them.",
            file=sys.stderr,
        )
        return 1

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    return BenchRun(args, postgres, service_facts).go()


if __name__ == "__main__":
    sys.exit(main())

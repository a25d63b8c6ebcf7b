"""The command line of `make chaos` (scripts/chaos.py): its options, then the run it chooses,
the monolith's (chaos/run.py) or the split deployment's (chaos/split.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import time
from pathlib import Path

from chaos.clock import say
from chaos.faults import KINDS, NEEDS_PRIVATE_CLUSTER, RESTART_POSTGRES, SPLIT_DEFAULT, SPLIT_KINDS
from chaos.load import CANCEL_WITHIN
from chaos.run import REPO, SHARED_SERVER_FAULTS, Run
from chaos.split import SplitRun
from harness.services import DEFAULT_POSTGRES_RESTART


class RunTimeout(Exception):
    """The overall --timeout ran out."""


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/chaos.py",
        description="Fault injection against the Procfile's processes on PostgreSQL + Redis "
        "(docs/chaos.md). Exits 1 on any violation.",
    )
    _load_options(parser.add_argument_group("the load"))
    _process_options(parser.add_argument_group("the processes"))
    _fault_options(parser.add_argument_group("the faults"))
    _run_options(parser.add_argument_group("services, time limits, output"))
    args = parser.parse_args(argv)
    _settle(parser, args)
    return args


def _load_options(group) -> None:
    group.add_argument("--orders", type=int, default=3000, help="orders to place (3000)")
    group.add_argument(
        "--load-seconds",
        type=float,
        help="spread the orders over at least this long (longer when --max-in-flight holds "
        "the clients); faults happen while the load runs (default: max(45, orders / 8))",
    )
    group.add_argument("--clients", type=int, default=8, help="client threads (8)")
    group.add_argument(
        "--max-in-flight",
        type=int,
        default=100,
        help="clients wait while this many acknowledged orders have not ended: the load follows "
        "what the system can do (100; 0: open loop, the pace alone)",
    )
    group.add_argument(
        "--decline-share", type=float, default=0.15, help="share of tok_chargeDeclined (0.15)"
    )
    group.add_argument(
        "--cancel-share",
        type=float,
        default=0.2,
        help="share of orders their customer cancels soon after the 202 (0.2)",
    )
    group.add_argument(
        "--cancel-within",
        type=float,
        default=CANCEL_WITHIN,
        help=f"a cancel comes 0 to this many seconds after the 202 ({CANCEL_WITHIN:.0f})",
    )


def _process_options(group) -> None:
    group.add_argument(
        "--split",
        action="store_true",
        help="the split deployment (Procfile.split): the shop, payments and notifications "
        "services, a database each, events over a RabbitMQ node of the run's own, mail to an "
        "SMTP server in this process; faults by default: " + ", ".join(SPLIT_DEFAULT),
    )
    group.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    group.add_argument(
        "--worker-concurrency", type=int, default=2, help="pool processes per worker (2)"
    )
    group.add_argument(
        "--web-concurrency", type=int, default=2, help="gunicorn worker processes (2)"
    )
    group.add_argument(
        "--gateway-timeout-rate",
        type=float,
        default=0.1,
        help="PAYMENTS_GATEWAY_TIMEOUT_RATE of the workers (0.1)",
    )
    group.add_argument("--lease-seconds", type=float, default=3.0, help="OUTBOX_LEASE_SECONDS")


def _fault_options(group) -> None:
    group.add_argument(
        "--faults",
        help=f"fault kinds, comma-separated, each happens at least once (default: all of "
        f"{', '.join(KINDS)}; with --postgres-url: {', '.join(SHARED_SERVER_FAULTS)}; with "
        f"--split: {', '.join(SPLIT_DEFAULT)}, and any of these)",
    )
    group.add_argument(
        "--fault-every",
        type=float,
        default=10.0,
        help="one fault per this many seconds of load, on average, once each kind had its "
        "turn (10)",
    )
    group.add_argument(
        "--restart-postgres",
        action="store_true",
        help="with --postgres-url: also restart that server once (everyone's connections)",
    )
    group.add_argument(
        "--postgres-restart-command",
        default=DEFAULT_POSTGRES_RESTART,
        help=f"with --postgres-url, the shell line that restarts it ({DEFAULT_POSTGRES_RESTART})",
    )


def _run_options(group) -> None:
    group.add_argument(
        "--postgres-url",
        default=os.environ.get("CHAOS_POSTGRES_URL") or None,
        help="an existing server to create the run's database on, instead of a private "
        "cluster of the run's own (default: CHAOS_POSTGRES_URL, else a private cluster)",
    )
    group.add_argument(
        "--quiet-timeout", type=float, default=600.0, help="longest wait for quiet (600 s)"
    )
    group.add_argument(
        "--timeout",
        type=float,
        help="the whole run at most, set-up and clean-up included "
        "(default: 2 x load seconds + quiet timeout + 600)",
    )
    group.add_argument("--api-sample", type=int, default=100, help="orders read back via API")
    group.add_argument("--seed", type=int, help="random seed (printed; repeat a run's plan)")
    group.add_argument(
        "--run-dir", type=Path, help="logs and summary.json (default var/chaos/<run id>)"
    )
    group.add_argument(
        "--keep", action="store_true", help="keep the database afterwards (with --postgres-url)"
    )


def _settle(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the options against each other and fill in the defaults that depend on others."""
    private = not args.postgres_url
    if args.faults is None:
        args.faults = ",".join(
            SPLIT_DEFAULT if args.split else KINDS if private else SHARED_SERVER_FAULTS
        )
    args.faults = [kind.strip() for kind in args.faults.split(",") if kind.strip()]
    unknown = set(args.faults) - set(KINDS) - set(SPLIT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    if not args.split and set(args.faults) & set(SPLIT_KINDS):
        parser.error(f"{', '.join(SPLIT_KINDS)} go with --split")
    if not private and NEEDS_PRIVATE_CLUSTER & set(args.faults):
        parser.error(f"{', '.join(sorted(NEEDS_PRIVATE_CLUSTER))} needs the private cluster")
    if private and (args.restart_postgres or args.keep):
        parser.error("--restart-postgres and --keep go with --postgres-url")
    if args.restart_postgres and RESTART_POSTGRES not in args.faults:
        args.faults.append(RESTART_POSTGRES)
    if not (0 <= args.decline_share <= 1 and 0 <= args.cancel_share <= 1):
        parser.error("--decline-share and --cancel-share are shares: between 0 and 1")
    if args.cancel_within < 0:
        parser.error("--cancel-within must be 0 or more seconds")
    if args.orders < 1 or args.clients < 1 or args.workers < 1:
        parser.error("--orders, --clients and --workers must be at least 1")
    if args.load_seconds is None:
        args.load_seconds = max(45.0, args.orders / 8)
    if args.timeout is None:
        args.timeout = 2 * args.load_seconds + args.quiet_timeout + 600


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    var = Path(os.environ.get("SHOP_VAR_DIR") or REPO / "var")
    run_dir = (args.run_dir or var / "chaos" / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = args.seed if args.seed is not None else random.randrange(2**31)

    def interrupted(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def timed_out(signum, frame):
        raise RunTimeout(f"the run took longer than --timeout {args.timeout:.0f}s")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(max(1, int(args.timeout)))
    say(f"chaos run {run_id}: {args.orders} orders, seed {seed}, folder {run_dir}")
    summary: dict = {"run_id": run_id, "seed": seed, "run_dir": str(run_dir)}
    code = 2
    try:
        with contextlib.ExitStack() as cleanup:
            try:
                mode = SplitRun if args.split else Run
                code = mode(args, run_id, run_dir, seed, cleanup, summary).go()
            finally:
                # Nothing interrupts the clean-up: half of it would leave processes behind.
                signal.alarm(0)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                say("cleaning up (processes, Redis, database, proxy, private cluster)")
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc or 'SIGINT'}); cleaned up")
        summary.setdefault("violations", []).append("interrupted")
        code = 130
    except RunTimeout as exc:
        say(f"FAILED: {exc}; cleaned up")
        summary.setdefault("violations", []).append(str(exc))
        code = 2
    except Exception as exc:
        say(f"FAILED: {type(exc).__name__}: {exc}")
        summary.setdefault("violations", []).append(f"{type(exc).__name__}: {exc}")
        code = 2
        import traceback

        traceback.print_exc()
    finally:
        signal.alarm(0)
    summary["exit_code"] = code
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    say(f"logs and summary.json: {run_dir}")
    return code

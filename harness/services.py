"""The services under the processes: the PostgreSQL server and a database of the run's own,
a private PostgreSQL cluster, a private Redis, a free port.

A private Redis is a child of the run on a free port (no persistence), so killing, restarting
and flushing it disturbs nobody. PostgreSQL is either a private cluster (``PostgresCluster``:
initdb into a temporary folder, pg_ctl on a free port, restarted and removed by the run alone)
or an existing server, where a run creates a database of its own and drops it at the end; only
``postgres_restart`` restarts such a server itself.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import psycopg
from psycopg import sql

DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# The machine's cluster, restarted in place (systemd is not asked: it may not be running).
DEFAULT_POSTGRES_RESTART = (
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | tail -n 1) main restart"
)


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(command: list[str], *, log: Path, **options) -> subprocess.Popen:
    """A server as a child in a session (process group) of its own, its output appended to
    ``log``; ``options`` for Popen (``cwd``, ``env``)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **options,
        )


def kill_group(popen: subprocess.Popen | None) -> None:
    """SIGKILL to a spawned server's process group; waits for the child."""
    if popen is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()


class RedisServer:
    """redis-server on 127.0.0.1:<port> without persistence: a restart loses every message."""

    def __init__(self, *, port: int, log_folder: Path, binary: str = "redis-server"):
        self.port = port
        self.log_folder = log_folder
        self.binary = binary
        self.popen: subprocess.Popen | None = None
        self.started = 0
        self.closed = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15) -> None:
        if self.closed:
            raise RuntimeError("this run's Redis is shut down")
        self.started += 1
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        self.popen = spawn(command, log=self.log_folder / f"redis.{self.started}.log")
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.popen.returncode}")
            if self.command("PING") == "+PONG":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.05)

    def command(self, *words: str) -> str | None:
        """One inline command; its reply's first line, or None when Redis does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall((" ".join(words) + "\r\n").encode())
                return sock.makefile("rb").readline().decode().strip()
        except OSError:
            return None

    def queued(self, queues: list[str]) -> int | None:
        """Messages waiting in these queues (kombu keeps each queue as a Redis list)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall("".join(f"LLEN {queue}\r\n" for queue in queues).encode())
                replies = sock.makefile("rb")
                return sum(int(replies.readline().decode().strip().lstrip(":")) for _ in queues)
        except (OSError, ValueError):
            return None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def kill(self) -> None:
        """SIGKILL: every queued message is gone (nothing is saved)."""
        kill_group(self.popen)

    def flushall(self) -> str | None:
        return self.command("FLUSHALL")

    def stop(self) -> None:
        """Kill it for good: a fault running at this moment cannot start it again."""
        self.closed = True
        self.kill()


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> PostgresServer:
        parts = urlparse(url)
        if parts.scheme not in ("postgres", "postgresql", "pgsql"):
            raise ValueError(f"not a PostgreSQL URL: {url}")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password) if parts.password else None,
        )

    def url(self, database: str) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgres://{auth}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres", timeout: int = 5) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            autocommit=True,
            connect_timeout=timeout,
        )

    def version(self) -> str:
        with self.connect(timeout=3) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connect() as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


class Database:
    """A database of this run's own on the server, dropped at the end (unless kept)."""

    def __init__(self, server: PostgresServer, name: str):
        self.server = server
        self.name = name
        self.created = False

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def create(self) -> None:
        with self.server.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.created = True

    def drop(self) -> None:
        if not self.created:
            return
        # FORCE (PostgreSQL 13+) ends the connections our killed processes may have left.
        with self.server.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )
        self.created = False


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl are: ``PG_BINDIR``, else the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian's layout), else the folder of ``pg_ctl`` on
    ``PATH``."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    debian = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in debian.glob("*/bin") if (p / "pg_ctl").exists()),
        key=lambda p: [int(n) if n.isdigit() else 0 for n in p.parent.name.split(".")],
    )
    if versions:
        return versions[-1]
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")


class PostgresCluster:
    """A PostgreSQL cluster of this run's own: ``initdb`` into a temporary folder, ``pg_ctl``
    on a free port of 127.0.0.1 (and a Unix socket in that folder only), trust authentication
    for ``postgres``, ``fsync=off`` (a process crash loses nothing the kernel holds; the machine
    is not crashed). Restarted (``-m fast``) or crashed (``-m immediate``, recovery at start)
    by the run alone; ``close()`` stops it and removes the folder, keeping its log.

    PostgreSQL refuses to run as root: as root every command runs as the ``postgres`` user
    (``runuser``), which owns the folder; otherwise as the current user.
    """

    def __init__(self, *, log_folder: Path, bindir: Path | None = None, port: int | None = None):
        self.log_folder = log_folder
        self.bindir = bindir or postgres_bindir()
        self.port = port or free_port()
        self.folder: Path | None = None
        self.running = False
        self.restarts = 0

    @property
    def server(self) -> PostgresServer:
        return PostgresServer(host="127.0.0.1", port=self.port, user="postgres", password=None)

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        assert self.folder is not None
        return self.folder / "postgres.log"

    def _as_owner(self, *command: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return list(command)

    def _run(self, *command: str, timeout: float = 120) -> str:
        result = subprocess.run(
            self._as_owner(*command),
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} exited with {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-800:]}"
            )
        return result.stdout

    def create(self) -> None:
        """initdb and start; the folder exists (and must be closed) from here on."""
        self.folder = Path(tempfile.mkdtemp(prefix="shop-postgres-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data),
            "--auth",
            "trust",
            "--username",
            "postgres",
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        self.start()

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c shared_buffers=64MB -c max_connections=200"
        )

    def _pg_ctl(self, action: str, *extra: str) -> str:
        return self._run(
            str(self.bindir / "pg_ctl"),
            action,
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log_path),
            "--options",
            self._options(),
            "--wait",
            "--timeout",
            "90",
            *extra,
        )

    def start(self) -> None:
        self._pg_ctl("start")
        self.running = True
        self.server.wait_ready(30)

    def restart(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown (sessions are ended); ``immediate``: a crash, every
        backend killed, the start replays the WAL. Waits until it answers again."""
        if mode not in ("fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        self._pg_ctl("restart", "--mode", mode)
        self.restarts += 1
        self.server.wait_ready(60)

    def close(self) -> None:
        """Stop it (if running) and remove the folder; its log is kept in ``log_folder``."""
        if self.folder is None:
            return
        try:
            if (self.data / "postmaster.pid").exists():
                try:
                    self._pg_ctl("stop", "--mode", "fast")
                except (RuntimeError, subprocess.TimeoutExpired):
                    self._pg_ctl("stop", "--mode", "immediate")
            self.running = False
        finally:
            with contextlib.suppress(OSError):
                shutil.copyfile(self.log_path, self.log_folder / "postgres.log")
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def postgres_restart(command: str, server: PostgresServer, timeout: float = 120) -> str:
    """Restart the PostgreSQL server with ``command`` (a shell line); wait until it answers."""
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{shlex.quote(command)} exited with {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    server.wait_ready(timeout)
    lines = (result.stdout or "").strip().splitlines()
    return lines[-1] if lines else ""


def rabbitmq_server_binary() -> Path:
    """``rabbitmq-server`` itself: ``RABBITMQ_SBINDIR`` if set, else Debian's
    ``/usr/lib/rabbitmq/bin`` (its ``/usr/sbin`` wrapper switches to the ``rabbitmq`` user and
    the machine's node), else the one on ``PATH``."""
    candidates = [os.environ.get("RABBITMQ_SBINDIR"), "/usr/lib/rabbitmq/bin"]
    for folder in filter(None, candidates):
        if (Path(folder) / "rabbitmq-server").exists():
            return Path(folder) / "rabbitmq-server"
    found = shutil.which("rabbitmq-server")
    if found is None:
        raise RuntimeError(
            "rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)"
        )
    return Path(found)


class RabbitMQNode:
    """A RabbitMQ node of this run's own: its own node name, AMQP and distribution ports on
    127.0.0.1, its database, logs, configuration, Erlang cookie (``HOME``) and an empty plugin
    list (no management port) in a temporary folder. Stopped, killed and started again by the
    run alone (its queues and their messages are kept on disk across restarts); ``close()``
    stops it and removes the folder, keeping its log. The machine's node is never touched."""

    def __init__(self, *, log_folder: Path, binary: Path | None = None):
        self.log_folder = log_folder
        self.binary = binary or rabbitmq_server_binary()
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"chaos-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.folder: Path | None = None
        self.popen: subprocess.Popen | None = None
        self.started = 0
        self.closed = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def env(self) -> dict[str, str]:
        assert self.folder is not None
        folder = self.folder
        return {
            **os.environ,
            "HOME": str(folder),  # the Erlang cookie, for the server and rabbitmqctl alike
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(folder / "plugins-expand"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            # Not the machine's files: they name its node and its port.
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(folder / "advanced.config"),
        }

    def create(self) -> None:
        """Write its folder and start it; the folder exists (and must be closed) from here on."""
        self.folder = Path(tempfile.mkdtemp(prefix="shop-rabbitmq-"))
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
            # Queue lengths as rabbitmqctl reports them are at most this old (5 s by default).
            "collect_statistics_interval = 500\n"
        )
        self.start()

    def start(self, timeout: float = 90) -> None:
        if self.closed:
            raise RuntimeError("this run's RabbitMQ node is shut down")
        self.started += 1
        self.popen = spawn(
            [str(self.binary)],
            log=self.log_folder / f"rabbitmq.{self.started}.log",
            cwd=self.folder,
            env=self.env,
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Until it accepts AMQP connections (its listener starts last, once it booted)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {self.popen.returncode}; see "
                    f"{self.log_folder}/rabbitmq.{self.started}.log"
                )
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server on port {self.port} did not answer")
            time.sleep(0.2)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def kill(self) -> None:
        """SIGKILL to the node's process group (a crash; what it confirmed is on disk)."""
        if self.popen is not None:
            kill_group(self.popen)
            self._group_gone()

    def _group_gone(self, timeout: float = 15) -> None:
        """Until no process of its group is left (beam.smp outlives its shell by a moment and
        holds the ports until then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.popen.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def terminate(self, grace: float = 30) -> None:
        """SIGTERM: a clean shutdown (connections closed, queues written); SIGKILL after
        ``grace`` seconds."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
        # Its Erlang helpers (erl_child_setup, inet_gethost) share the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._group_gone()

    def ctl(self, *command: str) -> list[list[str]] | None:
        """``rabbitmqctl <command>`` against this node, its rows split on tabs (no headers);
        None when the node does not answer."""
        ctl = self.binary.parent / "rabbitmqctl"
        ctl_command = [str(ctl if ctl.exists() else "rabbitmqctl"), "-n", self.node, "-q"]
        try:
            done = subprocess.run(
                [*ctl_command, *command, "--no-table-headers"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]

    def queues(self) -> dict[str, int] | None:
        """Messages in each queue, ready and unacknowledged; None when the node does not
        answer. rabbitmqctl's figures are a few seconds old."""
        rows = self.ctl("list_queues", "name", "messages")
        if rows is None:
            return None
        return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}

    def bindings(self, exchange: str) -> set[str] | None:
        """The routing keys bound to ``exchange``; None when the node does not answer."""
        rows = self.ctl("list_bindings", "source_name", "routing_key")
        if rows is None:
            return None
        return {row[1] for row in rows if len(row) == 2 and row[0] == exchange}

    def close(self) -> None:
        """Stop it for good and remove its folder (its server log is kept in ``log_folder``)."""
        self.closed = True
        if self.folder is None:
            return
        try:
            self.kill()  # its data goes with the folder: nothing to shut down cleanly
        finally:
            for log in (self.folder / "log").glob("*.log"):
                with contextlib.suppress(OSError):
                    shutil.copyfile(log, self.log_folder / f"rabbitmq-server.{log.name}")
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

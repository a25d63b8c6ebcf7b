"""The Procfile's processes, run as a process manager would: each instance in a session (and
process group) of its own, with its own log, started, made ready, killed, stopped, restarted.

Every instance gets a name (``worker.2``: the second worker started by this supervisor), its own
process group (a SIGKILL of the group takes a prefork worker's pool processes with it, and only
those), and its output in ``<logs>/<name>.log`` (and, with ``Logs(combined=True)``, prefixed in
``<logs>/all.log``). Celery node names are numbered the same way (``worker2@host``), so two
workers of one type are two nodes, and a worker's readiness is its answer to a control ping.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from harness.errors import HarnessError, ProcessExited
from harness.procfile import ProcessType, Procfile

# Celery's node name in a command ("--hostname worker@%h").
_HOSTNAME = re.compile(r"(?P<flag>--hostname|-n)(?P<sep>[ =])(?P<name>[^\s@]*)@(?P<host>\S+)")
# A type that keeps exiting by itself is not restarted forever (a port taken, a broken setting).
MAX_RESTARTS_PER_TYPE = 10
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the thread that started it ends, even by
    SIGKILL (a test timeout), so nothing outlives the run that started it. Only for processes
    started from the main thread: the signal follows the starting *thread*."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class Logs:
    """Each instance's output in its own file; with ``combined``, also prefixed in all.log (a
    thread per instance copies it: fine for chaos, avoided where CPU is measured)."""

    def __init__(self, folder: Path, *, combined: bool = True):
        self.folder = folder
        self.combined = combined
        folder.mkdir(parents=True, exist_ok=True)
        self._all = (folder / "all.log").open("ab", buffering=0) if combined else None
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def pump(self, name: str, stream) -> None:
        with self.path(name).open("ab", buffering=0) as own:
            for line in iter(stream.readline, b""):
                own.write(line)
                stamp = time.strftime("%H:%M:%S")
                with self._lock:
                    if self._all is not None and not self._all.closed:
                        self._all.write(f"{stamp} {name:<10} | ".encode() + line)
        stream.close()

    def close(self) -> None:
        with self._lock:
            if self._all is not None:
                self._all.close()


class Process:
    """One running instance of a process type, in a session (and process group) of its own."""

    def __init__(
        self,
        *,
        name: str,
        process_type: ProcessType,
        command: str,
        env: dict,
        cwd: Path,
        logs: Logs,
        node: str | None = None,
        die_with_parent_: bool = False,
    ):
        self.name = name
        self.type = process_type.name
        self.command = command
        self.env = env
        self.node = node  # a Celery worker's node name, with the host filled in
        self.log_path = logs.path(name)
        self.killed_by_us = False
        self.started_at = time.monotonic()
        if logs.combined:
            stdout = subprocess.PIPE
        else:
            stdout = self.log_path.open("ab")
            stdout.write(f"=== {time.strftime('%H:%M:%S')} {command}\n".encode())
            stdout.flush()
        self.popen = subprocess.Popen(
            ["/bin/sh", "-c", process_type.shell_line(command)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent if die_with_parent_ else None,
        )
        self.pid = self.popen.pid
        self._pump = None
        if logs.combined:
            self._pump = threading.Thread(
                target=logs.pump, args=(name, self.popen.stdout), name=f"log-{name}", daemon=True
            )
            self._pump.start()
        else:
            stdout.close()

    def __repr__(self) -> str:
        return f"{self.name} (pid {self.pid})"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive:
            raise ProcessExited(
                f"{self.name} exited (code {self.popen.returncode}); see {self.log_path}"
            )

    def children(self) -> list[int]:
        """PIDs of the processes it started (a prefork worker's pool), at any depth."""
        with contextlib.suppress(psutil.Error):
            return sorted(child.pid for child in psutil.Process(self.pid).children(recursive=True))
        return []

    def tree(self) -> list[int]:
        """This process and every process it started, while it runs."""
        return [self.pid, *self.children()] if self.alive else []

    def signal_group(self, sig: int) -> None:
        # The group outlives its leader while any member lives (orphaned pool processes).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group, and reap the leader."""
        self.killed_by_us = True
        self.signal_group(signal.SIGKILL)
        self.popen.wait()

    def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the group is gone afterwards."""
        self.killed_by_us = True
        if self.alive:
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        self.signal_group(signal.SIGKILL)
        self.popen.wait()
        self.join_logs()

    def join_logs(self) -> None:
        if self._pump is not None:
            self._pump.join(2)


class Supervisor:
    """Starts, readies, kills, stops and restarts instances of a Procfile's process types.

    ``current[type]`` lists the instances meant to be running. ``check_alive()`` raises when one
    of them exited by itself (a measurement cannot go on); ``watch()`` instead replaces such an
    instance, as systemd or Kubernetes would, and reports it (``unexpected_exits``).
    """

    def __init__(
        self,
        *,
        procfile: Procfile,
        env: dict,
        cwd: Path,
        logs: Logs,
        env_for: Callable[[str], dict] | None = None,
        stop_grace: float = 8.0,
        die_with_parent: bool = False,
        celery_app=None,
        say: Callable[[str], None] | None = None,
    ):
        self.procfile = procfile
        self.env = env
        self.env_for = env_for
        self.cwd = cwd
        self.logs = logs
        self.stop_grace = stop_grace
        self.die_with_parent = die_with_parent
        self.celery_app = celery_app
        self.say = say or (lambda message: print(message, file=sys.stderr, flush=True))
        self.current: dict[str, list[Process]] = {name: [] for name in procfile.processes}
        self.every: list[Process] = []
        self.unexpected_exits: list[str] = []
        self._started_per_type: dict[str, int] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._watch_stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    # --- one instance ----------------------------------------------------------------------

    def start(self, name: str) -> Process:
        """A new instance of process type ``name``, numbered; returns once it is spawned."""
        with self._lock:
            if self._closed:
                raise HarnessError("the supervisor is shut down")
            process_type = self.procfile[name]
            number = self._started_per_type.get(name, 0) + 1
            self._started_per_type[name] = number
            command, node = self._numbered(process_type, number)
            env = {**self.env, **process_type.env}
            if self.env_for is not None:
                env.update(self.env_for(name))
            process = Process(
                name=f"{name}.{number}",
                process_type=process_type,
                command=command,
                env=env,
                cwd=self.cwd,
                logs=self.logs,
                node=node,
                die_with_parent_=self.die_with_parent,
            )
            self.current[name].append(process)
            self.every.append(process)
            return process

    @staticmethod
    def _numbered(process_type: ProcessType, number: int) -> tuple[str, str | None]:
        """The command with its Celery node name numbered (one is added if it has none)."""
        command = process_type.command
        if not process_type.is_celery_worker:
            return command, None
        match = _HOSTNAME.search(command)
        if match is None:
            command += f" --hostname {process_type.name}@%h"
            match = _HOSTNAME.search(command)
        name = f"{match['name'] or process_type.name}{number}"
        command = command[: match.start()] + (
            f"{match['flag']}{match['sep']}{name}@{match['host']}" + command[match.end() :]
        )
        return command, f"{name}@{match['host'].replace('%h', socket.gethostname())}"

    def wait_ready(self, process: Process, timeout: float = 90.0) -> None:
        """Until the instance can do its job: a Celery worker answers a control ping (its pool
        is up), a web server answers ``/healthz`` on its ``PORT``; anything else: started."""
        if process.node is not None:
            if self.celery_app is None:
                raise HarnessError("waiting for a Celery worker needs the Celery app")

            def ready() -> bool:
                return bool(self.celery_app.control.ping(destination=[process.node], timeout=0.5))

        elif self.procfile[process.type].is_web:
            url = f"http://127.0.0.1:{process.env.get('PORT', '8000')}/healthz"

            def ready() -> bool:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    return answer.status == 200

        else:
            return process.check_alive()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process.check_alive()
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.2)
        raise HarnessError(
            f"{process.name} was not ready in {timeout:.0f}s; see {process.log_path}"
        )

    def kill(self, process: Process) -> None:
        """SIGKILL an instance's process group; it is no longer meant to run."""
        self._forget(process)
        process.kill()

    def stop(self, process: Process, grace: float | None = None) -> None:
        """SIGTERM (then SIGKILL) an instance; it is no longer meant to run."""
        self._forget(process)
        process.stop(self.stop_grace if grace is None else grace)

    def _forget(self, process: Process) -> None:
        with self._lock:
            if process in self.current[process.type]:
                self.current[process.type].remove(process)
            process.killed_by_us = True

    def one(self, name: str) -> Process:
        with self._lock:
            return self.current[name][0]

    def running(self) -> list[Process]:
        with self._lock:
            return [process for processes in self.current.values() for process in processes]

    # --- all of them -----------------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise ProcessExited if an instance meant to run has exited."""
        for process in self.running():
            process.check_alive()

    def watch(self) -> None:
        """From now on, an instance that exits by itself is reported and replaced."""
        self._watcher.start()

    def _watch(self) -> None:
        while not self._watch_stop.wait(0.5):
            with self._lock:
                if self._closed:
                    return
                for process in self.running():
                    if not process.alive and not process.killed_by_us:
                        self._replace(process)

    def _replace(self, process: Process) -> None:
        self.current[process.type].remove(process)
        process.signal_group(signal.SIGKILL)
        crashes = sum(note.startswith(f"{process.type}.") for note in self.unexpected_exits)
        again = crashes < MAX_RESTARTS_PER_TYPE
        note = f"{process} exited by itself with {process.popen.returncode}; " + (
            "starting another" if again else "not restarted: it keeps exiting"
        )
        self.unexpected_exits.append(note)
        self.say(f"WARNING {note} (see logs/{process.name}.log)")
        if again:
            self.start(process.type)

    def stop_all(self, grace: float | None = None) -> None:
        """Stop every running instance, the last started first (the supervisor can start
        others afterwards)."""
        running = self.running()
        for process in reversed([p for p in self.every if p in running]):
            self.stop(process, grace)

    def shutdown(self) -> None:
        """Stop every instance ever started (whatever is left of it), and refuse new ones."""
        with self._lock:
            self._closed = True
            self._watch_stop.set()
            processes = list(self.every)
        for process in processes:
            if process.alive:
                process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(max(0.1, deadline - time.monotonic()))
        for process in processes:
            process.killed_by_us = True
            process.signal_group(signal.SIGKILL)
            process.popen.wait()
        for process in processes:
            process.join_logs()


def venv_path(env: dict) -> str:
    """PATH with this interpreter's folder first, so the Procfile's ``celery`` and ``gunicorn``
    are the ones of the virtualenv that runs the harness."""
    return f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.defpath)}"

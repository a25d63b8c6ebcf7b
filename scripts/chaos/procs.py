"""The Procfile's processes, started as a process manager would, each in its own process group.

Every instance gets a name (``worker.2``: the second worker started in this run), its own PID
and process group (so a SIGKILL of the group takes a prefork worker's pool processes with it),
and its output in ``<run>/logs/<name>.log`` plus, prefixed, in ``<run>/logs/all.log``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chaos.clock import say

# A Procfile line: "name: command".
_PROCFILE_LINE = re.compile(r"^(?P<role>[A-Za-z0-9_-]+):\s*(?P<command>\S.*)$")
# Celery's node name in a command ("--hostname worker@%h"); numbered per instance so that two
# workers at once are two nodes.
_HOSTNAME = re.compile(r"(--hostname[ =])(\S*?)@")
# A role that keeps dying by itself is not restarted forever (a port taken, a broken setting).
MAX_RESTARTS_PER_ROLE = 10


def procfile_read(path: Path) -> dict[str, str]:
    """The Procfile's commands by role, in file order."""
    commands: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _PROCFILE_LINE.match(line.strip())
        if match:
            commands[match["role"]] = match["command"]
    return commands


def procfile_queues(commands: dict[str, str]) -> list[str]:
    """Every queue a Celery worker of the Procfile consumes (``--queues a,b`` / ``-Q a,b``)."""
    queues: list[str] = []
    for command in commands.values():
        for match in re.finditer(r"(?:--queues|-Q)[ =](\S+)", command):
            queues += [q for q in match[1].split(",") if q and q not in queues]
    return queues


class Process:
    """One instance of a Procfile role, in a session (and process group) of its own."""

    def __init__(self, *, name: str, role: str, command: str, env: dict, cwd: Path, logs: Logs):
        self.name = name
        self.role = role
        self.command = command
        self.killed_by_us = False
        self.started_at = time.monotonic()
        # exec: the shell becomes the command, so the PID we know is the process itself.
        self.popen = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self._pump = threading.Thread(
            target=logs.pump, args=(name, self.popen.stdout), name=f"log-{name}", daemon=True
        )
        self._pump.start()

    def __repr__(self) -> str:
        return f"{self.name} (pid {self.pid})"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

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
        self._pump.join(2)

    def children(self) -> list[int]:
        """PIDs whose parent is this process (a prefork worker's pool processes)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.pid:
                found.append(int(entry.name))
        return sorted(found)


class Logs:
    """Each process's output to its own file and, prefixed with its name, to all.log."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._all = (folder / "all.log").open("ab", buffering=0)
        self._lock = threading.Lock()

    def pump(self, name: str, stream) -> None:
        with (self.folder / f"{name}.log").open("ab", buffering=0) as own:
            for line in iter(stream.readline, b""):
                own.write(line)
                stamp = time.strftime("%H:%M:%S")
                with self._lock:
                    self._all.write(f"{stamp} {name:<10} | ".encode() + line)
        stream.close()

    def close(self) -> None:
        with self._lock:
            self._all.close()


class Supervisor:
    """Starts, kills and restarts the Procfile's roles; restarts what dies by itself.

    ``current[role]`` lists the instances that are meant to be running. A process that exits
    without us killing it is reported (``unexpected_exits``) and replaced, as systemd or
    Kubernetes would; the chaos summary shows the list.
    """

    def __init__(
        self,
        *,
        commands: dict[str, str],
        env_for: Callable[[str], dict],
        cwd: Path,
        logs: Logs,
        stop_grace: float = 8.0,
    ):
        self.commands = commands
        self.env_for = env_for
        self.cwd = cwd
        self.logs = logs
        self.stop_grace = stop_grace
        self.current: dict[str, list[Process]] = {role: [] for role in commands}
        self.every: list[Process] = []
        self.unexpected_exits: list[str] = []
        self._started_per_role: dict[str, int] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._watch_stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self, role: str) -> Process:
        with self._lock:
            if self._closed:
                raise RuntimeError("the supervisor is shut down")
            number = self._started_per_role.get(role, 0) + 1
            self._started_per_role[role] = number
            name = f"{role}.{number}"
            command = _HOSTNAME.sub(rf"\g<1>\g<2>{number}@", self.commands[role])
            process = Process(
                name=name,
                role=role,
                command=command,
                env=self.env_for(role),
                cwd=self.cwd,
                logs=self.logs,
            )
            self.current[role].append(process)
            self.every.append(process)
            return process

    def kill(self, process: Process) -> None:
        """SIGKILL an instance's process group; it is no longer meant to run."""
        with self._lock:
            if process in self.current[process.role]:
                self.current[process.role].remove(process)
            process.killed_by_us = True
        process.kill()

    def stop(self, process: Process) -> None:
        """SIGTERM (then SIGKILL) an instance; it is no longer meant to run."""
        with self._lock:
            if process in self.current[process.role]:
                self.current[process.role].remove(process)
            process.killed_by_us = True
        process.stop(self.stop_grace)

    def one(self, role: str) -> Process:
        with self._lock:
            return self.current[role][0]

    def watch(self) -> None:
        self._watcher.start()

    def _watch(self) -> None:
        while not self._watch_stop.wait(0.5):
            with self._lock:
                if self._closed:
                    return
                for role, processes in self.current.items():
                    for process in list(processes):
                        if process.alive or process.killed_by_us:
                            continue
                        code = process.popen.returncode
                        processes.remove(process)
                        process.signal_group(signal.SIGKILL)
                        crashes = sum(note.startswith(f"{role}.") for note in self.unexpected_exits)
                        again = crashes < MAX_RESTARTS_PER_ROLE
                        note = f"{process} exited by itself with {code}; " + (
                            "starting another" if again else "not restarted: it keeps exiting"
                        )
                        self.unexpected_exits.append(note)
                        say(f"WARNING {note} (see logs/{process.name}.log)")
                        if again:
                            self.start(role)

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
            process._pump.join(2)

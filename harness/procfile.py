"""The Procfile's process types: name, command and environment, read once, used by everyone.

``make run`` (honcho), ``make bench`` and ``make chaos`` all start the processes the Procfile
names, with its commands as written: a queue added to a worker there reaches every tool. A
second Procfile (``Procfile.split``: more processes, each service with its own database and
broker) plugs in the same way; its per-process environments are either written in the command
(``payments-worker: DATABASE_URL=$PAYMENTS_DATABASE_URL celery ...``, as honcho runs it) or
given by the caller (``Procfile.read(path, env={"payments-worker": {...}})``).

A ``release`` entry (Heroku's convention) is not a long-running process: it prepares the
databases once, before the others start (``release_run``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from honcho.environ import parse_procfile

from harness.errors import HarnessError

RELEASE = "release"
# Leading "NAME=value" words of a command: the process's own environment, as a shell reads it.
_ASSIGNMENTS = re.compile(r"""^((?:[A-Za-z_][A-Za-z0-9_]*=(?:'[^']*'|"[^"]*"|[^\s'"])*\s+)*)""")
# A Celery worker's queue list ("--queues a,b", "-Q a,b"), written out: a list the shell computes
# ("--queues "$(python manage.py outbox_queues)"") is the registry's, and names no queue here.
_QUEUES = re.compile(r"(?P<flag>--queues|-Q)(?P<sep>[ =])(?P<queues>[^\s\"'$]\S*)")


@dataclass(frozen=True)
class ProcessType:
    """One line of a Procfile: what to run, and what it gets on top of the run's environment."""

    name: str
    command: str
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_celery_worker(self) -> bool:
        return re.search(r"\bcelery\b.*\sworker(\s|$)", self.command) is not None

    @property
    def is_web(self) -> bool:
        return re.search(r"\b(gunicorn|uvicorn|daphne)\b", self.command) is not None

    @property
    def queues(self) -> list[str]:
        """The queues a Celery worker of this type consumes, as its command names them."""
        found: list[str] = []
        for match in _QUEUES.finditer(self.command):
            found += [q for q in match["queues"].split(",") if q and q not in found]
        return found

    def with_queues(self, extra: list[str]) -> ProcessType:
        """This worker also consuming ``extra`` queues (a tool's own, such as the bench's).

        A command that lists no queues consumes what the settings or the registry give it (the
        bench's and chaos's own apps subscribe their queues there): left as it is."""
        missing = [q for q in extra if q not in self.queues]
        if not missing:
            return self
        command = _QUEUES.sub(
            lambda m: f"{m['flag']}{m['sep']}{','.join([m['queues'], *missing])}",
            self.command,
            count=1,
        )
        return replace(self, command=command)

    def shell_line(self, command: str | None = None) -> str:
        """The line for ``/bin/sh -c``: the shell expands ``${PORT:-8000}`` and applies leading
        assignments, then ``exec`` makes the command itself the process we know."""
        command = command or self.command
        assignments = _ASSIGNMENTS.match(command)[1]
        return f"{assignments}exec {command[len(assignments) :]}"


@dataclass(frozen=True)
class Procfile:
    path: Path
    types: dict[str, ProcessType]

    @classmethod
    def read(cls, path: Path, env: Mapping[str, Mapping[str, str]] | None = None) -> Procfile:
        """The process types of ``path`` in file order; ``env``: extra environment by name."""
        processes = parse_procfile(Path(path).read_text()).processes
        env = env or {}
        unknown = set(env) - set(processes)
        if unknown:
            raise HarnessError(f"{path} has no process {', '.join(sorted(unknown))}")
        types = {
            name: ProcessType(name=name, command=command.strip(), env=dict(env.get(name, {})))
            for name, command in processes.items()
        }
        return cls(path=Path(path), types=types)

    def __getitem__(self, name: str) -> ProcessType:
        try:
            return self.types[name]
        except KeyError:
            raise HarnessError(f"{self.path.name} has no process {name!r}") from None

    def require(self, *names: str) -> None:
        missing = [name for name in names if name not in self.types]
        if missing:
            raise HarnessError(f"{self.path.name} has no {', '.join(missing)}")

    @property
    def processes(self) -> list[str]:
        """The long-running process types (everything but ``release``)."""
        return [name for name in self.types if name != RELEASE]

    @property
    def queues(self) -> list[str]:
        """Every queue a Celery worker of this Procfile consumes."""
        found: list[str] = []
        for process_type in self.types.values():
            found += [q for q in process_type.queues if q not in found]
        return found

    def replace(self, process_type: ProcessType) -> Procfile:
        return replace(self, types={**self.types, process_type.name: process_type})


def release_run(procfile: Procfile, *, env: dict, cwd: Path, log: Path, timeout=600) -> None:
    """Prepare the databases: the Procfile's ``release`` entry, or ``manage.py migrate``."""
    if RELEASE in procfile.types:
        release = procfile[RELEASE]
        line = release.shell_line()
        env = {**env, **release.env}
    else:
        line = "exec python manage.py migrate --noinput"
    with log.open("ab") as out:
        done = subprocess.run(
            ["/bin/sh", "-c", line],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if done.returncode:
        raise HarnessError(f"release ({line}) exited with {done.returncode}; see {log}")

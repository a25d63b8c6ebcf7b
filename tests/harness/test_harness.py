"""The process harness of `make bench` and `make chaos` (harness/): it runs the Procfile as
written, one process group per instance, and kills, stops and replaces whole groups.

Real processes, no Django: a few seconds in all.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from harness.errors import HarnessError, ProcessExited
from harness.processes import Logs, Supervisor
from harness.procfile import Procfile, release_run

REPO = Path(__file__).resolve().parents[2]


def write_procfile(folder: Path, text: str) -> Procfile:
    path = folder / "Procfile"
    path.write_text(text)
    return Procfile.read(path)


def wait_until(predicate, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_the_shops_procfile_is_read_as_written():
    procfile = Procfile.read(REPO / "Procfile")
    assert procfile.processes[:4] == ["web", "worker", "relay", "beat"]
    worker = procfile["worker"]
    assert worker.is_celery_worker and procfile["web"].is_web
    # The shop's workers take their queues from the subscriber registry (manage.py
    # outbox_queues), so the Procfile names none, and a tool's own queue is not added to it:
    # the tool's app subscribes it in the registry.
    assert "outbox_queues" in worker.command and procfile.queues == []
    assert worker.with_queues(["bench"]) == worker


def test_a_written_out_queue_list_gets_a_tools_own_queue(tmp_path):
    procfile = write_procfile(tmp_path, "worker: celery -A shop worker --queues a,b -c 2\n")
    worker = procfile["worker"]
    assert procfile.queues == ["a", "b"]
    with_bench = worker.with_queues(["bench"])
    assert with_bench.queues == ["a", "b", "bench"]
    assert with_bench.command.replace(",bench", "") == worker.command


def test_release_is_not_a_long_running_process_and_runs_first(tmp_path):
    procfile = write_procfile(tmp_path, "release: echo prepared > released\nweb: sleep 30\n")
    assert procfile.processes == ["web"]
    release_run(procfile, env=dict(os.environ), cwd=tmp_path, log=tmp_path / "release.log")
    assert (tmp_path / "released").read_text() == "prepared\n"
    failing = write_procfile(tmp_path, "release: sh -c 'exit 3'\n")
    with pytest.raises(HarnessError, match="exited with 3"):
        release_run(failing, env=dict(os.environ), cwd=tmp_path, log=tmp_path / "release.log")


def test_environment_per_process_from_the_command_and_from_the_caller(tmp_path):
    procfile = Procfile.read(
        write_procfile(tmp_path, 'job: COLOUR="dark blue" SIZE=${SIZE:-9} env\n').path,
        env={"job": {"SHAPE": "round"}},
    )
    supervisor = Supervisor(
        procfile=procfile, env=dict(os.environ), cwd=tmp_path, logs=Logs(tmp_path / "logs")
    )
    process = supervisor.start("job")
    process.popen.wait(10)
    process.join_logs()
    printed = (tmp_path / "logs" / "job.1.log").read_text().splitlines()
    assert {"COLOUR=dark blue", "SIZE=9", "SHAPE=round"} <= set(printed)
    with pytest.raises(HarnessError, match="no process"):
        Procfile.read(procfile.path, env={"nobody": {}})


def test_kill_takes_the_whole_process_group_and_watch_replaces_what_exits(tmp_path):
    procfile = write_procfile(tmp_path, "pair: sh -c 'sleep 60 & sleep 60'\nshort: sleep 0.2\n")
    said: list[str] = []
    supervisor = Supervisor(
        procfile=procfile,
        env=dict(os.environ),
        cwd=tmp_path,
        logs=Logs(tmp_path / "logs"),
        say=said.append,
        stop_grace=2,
    )
    try:
        pair = supervisor.start("pair")
        wait_until(lambda: len(pair.children()) == 2)
        children = [psutil.Process(pid) for pid in pair.children()]
        supervisor.kill(pair)
        psutil.wait_procs(children, timeout=10)
        assert not any(child.is_running() for child in children)
        assert supervisor.current["pair"] == []

        short = supervisor.start("short")
        wait_until(lambda: not short.alive)
        with pytest.raises(ProcessExited):
            supervisor.check_alive()
        supervisor.watch()
        wait_until(lambda: supervisor.current["short"] and supervisor.current["short"][0] != short)
        assert supervisor.current["short"][0].name.startswith("short.")
        assert any("short.1" in note for note in supervisor.unexpected_exits)
    finally:
        supervisor.shutdown()
    assert not any(process.alive for process in supervisor.every)


def test_celery_workers_get_numbered_node_names(tmp_path):
    procfile = write_procfile(
        tmp_path,
        "worker: celery -A shop worker --queues a --hostname worker@%h\n"
        "plain: celery -A shop worker -Q b\n",
    )
    command, node = Supervisor._numbered(procfile["worker"], 2)
    assert "--hostname worker2@%h" in command and node.startswith("worker2@")
    command, node = Supervisor._numbered(procfile["plain"], 1)
    assert command.endswith("--hostname plain1@%h") and node.startswith("plain1@")


def test_stop_all_stops_the_last_started_first(tmp_path):
    procfile = write_procfile(tmp_path, "first: sleep 60\nsecond: sleep 60\n")
    supervisor = Supervisor(
        procfile=procfile, env=dict(os.environ), cwd=tmp_path, logs=Logs(tmp_path / "logs")
    )
    stopped: list[str] = []
    try:
        second, first = supervisor.start("second"), supervisor.start("first")
        for process in (second, first):
            process.stop = lambda grace, p=process, stop=process.stop: (
                stopped.append(p.name),
                stop(grace),
            )
        supervisor.stop_all(grace=2)
    finally:
        supervisor.shutdown()
    assert stopped == ["first.1", "second.1"]
    assert supervisor.running() == []

"""The supervisor of `outbox consume --processes N`: its workers die with it, and stopping
it (twice, as an impatient operator does) is clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from infra.broker import EmbeddedBroker
from pipeline.kafka_admin import _describe, admin_client
from tests.consumer_harness import wait_for
from tests.integration.test_consumer_processes import _env, _process_group

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return [int(p) for p in found]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) is gone for our purpose.
    status = (
        Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else "Z"
    )
    return status != "Z"


def _start(engine: Engine, bootstrap: str, processes: int) -> tuple[subprocess.Popen[bytes], str]:
    name, topic, _group = _process_group(bootstrap)
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "consume", "--group", name,
         "--processes", str(processes)],
        cwd=ROOT,
        env=_env(engine, bootstrap, name, topic),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    return supervisor, name


def _members(bootstrap: str, group: str) -> int:
    admin = admin_client(bootstrap)
    try:
        return _describe(admin, group)[1]
    finally:
        admin.close()


def test_a_killed_supervisor_leaves_no_worker_and_no_member_behind(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    bootstrap = kafka.bootstrap_servers
    supervisor, group = _start(postgres_db, bootstrap, processes=2)
    workers: list[int] = []
    try:
        wait_for(lambda: _members(bootstrap, group) == 2, timeout_s=60, what="two members")
        workers = _children(supervisor.pid)
        assert len(workers) == 2
        supervisor.kill()  # kill -9: no chance to stop its children itself
        supervisor.wait(10)
        wait_for(lambda: not any(_alive(w) for w in workers), timeout_s=30, what="workers gone")
        wait_for(lambda: _members(bootstrap, group) == 0, timeout_s=30, what="group empty")
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if supervisor.poll() is None:
            supervisor.kill()
        if supervisor.stdout is not None:
            supervisor.stdout.close()


def test_a_double_ctrl_c_stops_cleanly_without_a_traceback(
    postgres_db: Engine, kafka: EmbeddedBroker
) -> None:
    bootstrap = kafka.bootstrap_servers
    supervisor, group = _start(postgres_db, bootstrap, processes=2)
    try:
        wait_for(lambda: _members(bootstrap, group) == 2, timeout_s=60, what="two members")
        supervisor.send_signal(signal.SIGINT)
        time.sleep(0.2)
        supervisor.send_signal(signal.SIGINT)
        output, _ = supervisor.communicate(timeout=60)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    text = output.decode()
    assert supervisor.returncode == 0, text[-3000:]
    assert "Traceback" not in text
    assert "still stopping" in text
    assert _members(bootstrap, group) == 0

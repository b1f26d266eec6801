"""A bounded chaos run: writers, two relays and two supervised workers of one group on
PostgreSQL, with kill -9 of a worker, kill -9 of a supervisor and every database backend
terminated, while messages flow. Every effect happens exactly once and the group recovers
by itself."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from infra.broker import EmbeddedBroker
from infra.db import make_engine
from tests.consumer_harness import effects, harness, ping, wait_for
from tests.integration.test_consumer_processes import _env, _process_group, _registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 3000


def _children(pid: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return [int(p) for p in found]


def _terminate_backends(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        )


def test_workers_killed_and_database_dropped_mid_stream_every_effect_once(
    postgres_db: Engine, kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    bootstrap = kafka.bootstrap_servers
    name, topic, group = _process_group(bootstrap)
    registry, _ = _registry(name)
    admin = make_engine(postgres_db.url.render_as_string(hide_password=False))
    env = {**_env(postgres_db, bootstrap, name, topic), "CONSUMER_LIVENESS_TIMEOUT_S": "20"}
    supervisors: list[subprocess.Popen[bytes]] = []
    orphans: list[int] = []
    written = threading.Event()

    def write() -> None:
        """A writer committing 50 messages per transaction, riding out the database drop."""
        n = 0
        while n < MESSAGES:
            batch = [ping(topic, m, key=f"k-{m % 97}") for m in range(n, min(n + 50, MESSAGES))]
            try:
                h.write(batch)
            except DBAPIError:
                time.sleep(0.2)
                continue
            n += len(batch)
            time.sleep(0.05)
        written.set()

    try:
        with harness(postgres_db, bootstrap, group, registry) as h:
            h.start_relay()
            h.start_relay()
            for index in range(2):
                supervisors.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "pipeline.cli", "consume", "--group", name],
                        cwd=ROOT,
                        env=env,
                        stdout=(tmp_path / f"consume-{index}.log").open("wb"),
                        stderr=subprocess.STDOUT,
                    )
                )
            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            wait_for(lambda: len(effects(admin, name)) > 200, timeout_s=60, what="flowing")
            # kill -9 of one supervisor's worker: its supervisor starts another.
            [worker] = _children(supervisors[0].pid)
            os.kill(worker, signal.SIGKILL)
            time.sleep(3)
            assert _terminate_backends(admin) >= 1
            time.sleep(3)
            # kill -9 of the other supervisor: its worker goes with it; the first takes over.
            orphans += _children(supervisors[1].pid)
            supervisors[1].kill()
            supervisors[1].wait(10)
            last_fault = time.monotonic()
            assert written.wait(120), "the writer did not finish"
            try:
                wait_for(
                    lambda: len(effects(admin, name)) == MESSAGES,
                    timeout_s=120,
                    what="every effect after the faults",
                )
            except AssertionError:
                logs = "\n".join(
                    f"--- {p.name}\n" + p.read_text()[-4000:] for p in tmp_path.glob("*.log")
                )
                raise AssertionError(
                    f"{len(effects(admin, name))} of {MESSAGES} effects\n{logs}"
                ) from None
            recovered_s = time.monotonic() - last_fault
    finally:
        for supervisor in supervisors:
            if supervisor.poll() is None:
                supervisor.send_signal(signal.SIGTERM)
                supervisor.communicate(timeout=30)
        for pid in orphans:  # a killed supervisor's worker must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        admin.dispose()
        postgres_db.dispose()
    counted = effects(make_engine(postgres_db.url.render_as_string(hide_password=False)), name)
    assert counted == dict.fromkeys(range(MESSAGES), 1)  # none lost, none twice
    assert recovered_s < 120

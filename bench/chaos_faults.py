"""The processes of a chaos run (bench/chaos.py) and the faults it injects into them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos_forged import Targets, forge_records
from sqlalchemy import text

from infra.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parents[1]


class Processes:
    """Every process of the run, in its own process group, logging to a folder."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.named: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=self.env,
            stdout=(self.folder / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.named[name] = proc
        return proc

    def outbox(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(name, "-m", "pipeline.cli", *args)

    def alive(self, prefix: str) -> list[str]:
        return [n for n, p in self.named.items() if n.startswith(prefix) and p.poll() is None]

    def children(self, name: str) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-P", str(self.named[name].pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return [int(p) for p in found]

    def restarts(self) -> int:
        return sum(
            p.read_text(errors="replace").count("starting another")
            for p in self.folder.glob("*.log")
        )

    def stop_all(self) -> None:
        for proc in self.named.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.named.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Rig:
    procs: Processes
    broker: EmbeddedBroker | None  # None: an external broker, which is not ours to pause
    bootstrap: str
    engine: Any
    rng: random.Random
    targets: Targets | None = None  # what forged records name (bench/chaos_forged.py)


def _kill_relay(rig: Rig) -> str:
    name = rig.rng.choice(rig.procs.alive("relay"))
    rig.procs.named[name].kill()
    rig.procs.named[name].wait()
    rig.procs.outbox(name + "'", "relay")  # as its operator's systemd would
    return f"kill -9 {name} (restarted)"


def _kill_worker(rig: Rig) -> str:
    name = rig.rng.choice(rig.procs.alive("consume"))
    for pid in rig.procs.children(name):
        os.kill(pid, signal.SIGKILL)
    return f"kill -9 the worker of {name} (its supervisor starts another)"


def _kill_supervisor(rig: Rig) -> str:
    name = rig.rng.choice(rig.procs.alive("consume"))
    rig.procs.named[name].kill()
    rig.procs.named[name].wait()
    group = name.split("-")[1]  # consume-<group>-<n>
    rig.procs.outbox(name + "'", "consume", "--group", group)
    return f"kill -9 {name} (its worker dies with it; restarted)"


def _kill_dispatcher(rig: Rig) -> str:
    name = rig.rng.choice(rig.procs.alive("deliver"))
    rig.procs.named[name].kill()  # mid-send: its claimed deliveries wait for their lease
    rig.procs.named[name].wait()
    rig.procs.outbox(name + "'", "webhooks", "deliver")
    return f"kill -9 {name} (restarted)"


def _kill_scheduler_leader(rig: Rig) -> str:
    with rig.engine.connect() as conn:
        owner = str(conn.execute(text("SELECT owner FROM scheduler_leader")).scalar())
    procs = rig.procs
    leaders = [n for n in procs.alive("scheduler") if f":{procs.named[n].pid}:" in owner]
    name = (leaders or [rig.rng.choice(procs.alive("scheduler"))])[0]
    procs.named[name].kill()
    procs.named[name].wait()
    procs.outbox(name + "'", "scheduler")
    was = "the leader" if leaders else "a standby (no leader found)"
    return f"kill -9 {name}, {was} (restarted)"


# Longer than the producers' delivery timeout (30 s): the outage that once stopped the relay
# for good (ADR 012).
LONG_OUTAGE_S = 60.0


def _pause(rig: Rig, seconds: float) -> None:
    process = rig.broker.process if rig.broker is not None else None
    if process is None:
        raise RuntimeError("the embedded broker is not running")
    os.kill(process.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(process.pid, signal.SIGCONT)


def _pause_broker(rig: Rig) -> str:
    seconds = rig.rng.uniform(10, 30)
    _pause(rig, seconds)
    return f"SIGSTOP of the broker for {seconds:.0f} s"


def _long_outage(rig: Rig) -> str:
    _pause(rig, LONG_OUTAGE_S)
    return f"SIGSTOP of the broker for {LONG_OUTAGE_S:.0f} s (a long outage)"


def _drop_database(rig: Rig) -> str:
    with rig.engine.connect() as conn:
        dropped = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    return f"pg_terminate_backend of {dropped} backends"


def _hostile_record(rig: Rig) -> str:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=rig.bootstrap.split(","))
    producer.send(
        "interaction-events",
        key=b"k\x00" * 200,
        value=b'{"tenant_id": "chaos", "visitor_id": 7}',
        headers=[("ce_id", b"hostile\x00id"), ("ce_type", b"interaction.recorded")],
    )
    producer.flush(10)
    producer.close()
    return "a hostile record (600-byte key with NULs, NUL in ce_id, bad schema)"


def _forged_records(rig: Rig) -> str:
    if rig.targets is None:
        raise RuntimeError("no targets set up for forged records")
    return forge_records(rig.bootstrap, rig.targets)


# What only a broker of the run's own can suffer (not an external one).
BROKER_FAULTS = frozenset({"pause-broker", "long-broker-outage"})

FAULTS: dict[str, Callable[[Rig], str]] = {
    "kill-relay": _kill_relay,
    "kill-worker": _kill_worker,
    "kill-supervisor": _kill_supervisor,
    "kill-scheduler-leader": _kill_scheduler_leader,
    "kill-dispatcher": _kill_dispatcher,
    "pause-broker": _pause_broker,
    "long-broker-outage": _long_outage,
    "drop-database": _drop_database,
    "hostile-record": _hostile_record,
    "forged-records": _forged_records,
}

"""bench/latency.py in a tiny configuration: a few commands through the real relay and
`outbox consume`, on PostgreSQL and the session's broker (the embedded one, or the one
OUTBOX_TEST_KAFKA_BOOTSTRAP names). Its JSON is checked for what it claims, not for its
timings: every command handled, every hop present, the hops in causal order."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from consumers.kafka_source import KafkaSource
from infra.broker import EmbeddedBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HOPS = ["written", "committed", "claimed", "sent", "acked", "fetched", "handler_started"]
# CreateTime is whole milliseconds, floored: it may read up to 1 ms before the claim ended.
CREATE_TIME_RESOLUTION_S = 0.001


def _bench(engine: Engine, bootstrap: str, workdir: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable, "bench/latency.py",
            "--url", engine.url.render_as_string(hide_password=False),
            "--bootstrap", bootstrap,
            "--workdir", str(workdir),
            "--warmup", "2", "--json", "--samples", *args,
        ],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def _causal_order_broken(sample: dict[str, float]) -> list[str]:
    """The pairs of hops whose order is causal (one cannot happen before the other) that
    are out of order; `committed` races the relay and `acked` races the fetch, so those
    pairs are not compared."""
    s, slack = sample, CREATE_TIME_RESOLUTION_S
    pairs = [
        ("written", "committed", s["written"] <= s["committed"]),
        ("written", "claimed", s["written"] <= s["claimed"]),
        ("claimed", "sent", s["claimed"] <= s["sent"] + slack),
        ("sent", "acked", s["sent"] <= s["acked"]),
        ("sent", "fetched", s["sent"] <= s["fetched"]),
        ("fetched", "handler_started", s["fetched"] <= s["handler_started"]),
        ("committed", "handler_started", s["committed"] <= s["handler_started"]),
    ]
    return [f"{a} > {b}" for a, b, ok in pairs if not ok]


def test_the_latency_bench_reports_every_hop_of_every_command_in_causal_order(
    postgres_db: Engine, kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    """Both clients in one invocation (each with a topic and group of its own: a group
    refuses members of the other client) where confluent-kafka is installed."""
    clients = ["kafka-python", "confluent"] if _has_confluent() else ["kafka-python"]
    results = _bench(
        postgres_db,
        kafka.bootstrap_servers,
        tmp_path,
        *(arg for client in clients for arg in ("--client", client)),
        *("--rate", "20", "--seconds", "0.3"),
    )

    assert results["hops"] == HOPS
    assert results["database"] == "postgresql"
    assert [run["client"] for run in results["runs"]] == clients
    assert len({run["topic"] for run in results["runs"]}) == len(clients)
    assert len({run["group"] for run in results["runs"]}) == len(clients)
    for run in results["runs"]:
        assert run["commands"] == 6
        assert run["handled"] == 6, "every command's job started and was matched to its row"
        samples = run["samples"]
        assert len({s["event_id"] for s in samples}) == 6
        for sample in samples:
            missing = [hop for hop in HOPS if sample.get(hop) is None]
            assert not missing, f"{sample['event_id']}: no {missing}"
            assert not _causal_order_broken(sample), (sample, _causal_order_broken(sample))
        end_to_end = run["end_to_end_ms"]
        assert end_to_end["p50"] <= end_to_end["p99"] <= end_to_end["max"]
        assert set(run["since_commit_ms"]) == set(HOPS) - {"committed"}
        # The stamps the job wrote are the bench application's, one line per message.
        stamped = (tmp_path / f"stamps-{run['client']}.txt").read_text().split()
        assert {s["event_id"] for s in samples} <= set(stamped)


def _has_confluent() -> bool:
    return importlib.util.find_spec("confluent_kafka") is not None


def test_the_latency_bench_fails_loudly_when_no_broker_answers(
    postgres_db: Engine, tmp_path: Path
) -> None:
    """A bootstrap where nothing listens: an error exit naming the broker, not a hang."""
    done = subprocess.run(
        [
            sys.executable, "bench/latency.py",
            "--url", postgres_db.url.render_as_string(hide_password=False),
            "--bootstrap", "127.0.0.1:9", "--workdir", str(tmp_path),
            "--rate", "5", "--seconds", "0.2", "--json",
        ],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "no Kafka broker answered at 127.0.0.1:9" in done.stderr
    assert done.stdout == ""


def test_a_workers_fetch_wait_reaches_its_kafka_consumer(kafka: EmbeddedBroker) -> None:
    """CONSUMER_FETCH_MAX_WAIT_MS bounds commit -> job start on the embedded broker (ADR
    020): the worker's consumer must really be built with it."""
    source = KafkaSource(
        kafka.bootstrap_servers,
        f"fetch-wait-{uuid.uuid4().hex[:8]}",
        client_id="test-fetch-wait",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=6000,
        max_poll_records=10,
        fetch_max_wait_ms=7,
    )
    try:
        assert source._consumer.config["fetch_max_wait_ms"] == 7
    finally:
        source.close()

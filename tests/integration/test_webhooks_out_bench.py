"""bench/webhooks_out.py in a tiny configuration: a couple of hundred deliveries through the
real relay, `webhooks` group and dispatcher to 4 local endpoints (one slow), on PostgreSQL (a
database of its own: the bench drops and migrates it) and the session's broker (the embedded
one, or the one OUTBOX_TEST_KAFKA_BOOTSTRAP names). Its JSON is checked for what it claims,
not for its timings: every (event, endpoint) pair arrived exactly once, signed, with its
webhook-id, in every run; the figures and ratios are there and positive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from infra.broker import EmbeddedBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {"avg", "p50", "p95", "p99", "max"}


def _bench(url: str, bootstrap: str, workdir: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable, "bench/webhooks_out.py", "--url", url, "--bootstrap", bootstrap,
            "--workdir", str(workdir), "--json", *args,
        ],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_the_outbound_webhooks_bench_delivers_every_pair_once_and_reports_its_figures(
    postgres_db: Engine, kafka: EmbeddedBroker, tmp_path: Path
) -> None:
    url = postgres_db.url.set(database=f"{postgres_db.url.database}_webhooks_out")
    results = _bench(
        url.render_as_string(hide_password=False),
        kafka.bootstrap_servers,
        tmp_path,
        *("--deliveries", "200", "--endpoints", "4", "--slow-share", "3", "--slow-s", "0.3"),
        *("--rate", "30", "--seconds", "3"),
    )

    assert results["database"] == "postgresql"
    assert (results["endpoints"], results["fast_endpoints"], results["slow_share"]) == (4, 3, 3)
    # ceil((200 - 3) / 3) = 66 products, each to the 3 fast endpoints, and 3 uploads.
    for name in ("ours", "ours_slow_answering_at_once", "baseline"):
        run = results[name]
        assert (run["deliveries"], run["fast_deliveries"], run["slow_deliveries"]) == (201, 198, 3)
        assert run["check"] == {
            "expected": 201, "requests": 201, "delivered": 201, "missing": 0, "unexpected": 0,
            "duplicates": 0, "unverified": 0, "wrong_webhook_id": 0,
        }, name  # fmt: skip
        assert 0 < run["fast_done_s"] <= run["all_done_s"]
        assert run["per_s"] > 0
        assert run["fast_per_s"] > 0
    assert results["baseline"]["not_2xx"] == 0
    assert results["ours"]["commits"] == 69

    latency = results["latency"]
    check = latency["check"]
    assert check["missing"] == check["duplicates"] == check["unverified"] == 0
    assert check["wrong_webhook_id"] == check["unexpected"] == 0
    assert check["delivered"] == check["expected"] == check["requests"]
    assert latency["fast_deliveries"] == 30 * 3  # 10 products/s for 3 s, to 3 endpoints
    assert latency["slow_deliveries"] >= 1
    for hop in (
        "commit_to_receiver_ms",
        "commit_to_fanned_out_ms",
        "commit_to_first_attempt_ms",
    ):
        figures = latency[hop]
        assert set(figures) == FIGURES
        assert figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]
    assert latency["commit_to_receiver_ms"]["p50"] > 0
    assert set(latency["goals"]) == {"p50", "p99"}

    ratios = results["ratios"]
    assert set(ratios) == {
        "ours_over_baseline", "fast_ours_over_baseline", "fast_with_slow_over_without",
        "ceiling_of_ours_over_baseline",
    }  # fmt: skip
    assert all(isinstance(v, float) and v > 0 for v in ratios.values()), ratios
    assert set(results["goals"]) == {
        "ours_over_baseline_at_least_2", "p50_at_most_20_ms", "p99_at_most_100_ms",
    }  # fmt: skip
    settings = results["settings"]
    assert settings["WEBHOOK_ALLOW_NETWORKS"] == "127.0.0.1/32"
    assert settings["WEBHOOK_ENCRYPTION_KEYS"] == "(a fresh key)"  # never the key
    for log in ("relay", "consume-webhooks", "webhooks-deliver", "receiver"):
        assert (tmp_path / f"{log}.log").exists()

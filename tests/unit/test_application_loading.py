"""Which application a process loads: this project's `jobs` package, a CONSUMER_MODULES
application, or both, and never `jobs` where only the runtime is asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
from sqlalchemy import create_engine
from pipeline.settings import load_settings
from pipeline.wiring import build_worker
worker = build_worker(load_settings(), create_engine("sqlite://"), sys.argv[1])
from consumers import GROUPS
print(json.dumps({
    "jobs": sorted(m for m in sys.modules if m == "jobs" or m.startswith("jobs.")),
    "groups": sorted(GROUPS),
}))
"""


def _probe(group: str) -> dict[str, list[str]]:
    env = {**os.environ, "CONSUMER_MODULES": "examples.library.jobs", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, group],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_worker_of_a_foreign_group_imports_none_of_the_application() -> None:
    loaded = _probe("library")
    assert loaded["jobs"] == []
    assert loaded["groups"] == ["library"]


def test_a_worker_of_the_applications_group_has_both_applications_groups() -> None:
    loaded = _probe("media")
    assert "jobs.blurhash" in loaded["jobs"]
    assert {"library", "media", "payments"} <= set(loaded["groups"])


def test_importing_the_runtime_loads_no_application_module() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, consumers, consumers.source; "
            "print(sorted(m for m in sys.modules if m == 'jobs' or m.startswith('jobs.')))",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr[-2000:]

"""Every benchmark module imports: the benches are not type-checked, and a name removed
from the library once broke `make chaos` (bench/chaos_webhooks.py) with no test of its own
noticing until the short chaos run in CI. In a process of its own: a bench module declares
routes and event types (bench/latency_app.py), which must not reach other tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")

# The benches run as scripts, so siblings import each other by name too: their folder goes
# last on the path (bench/relay.py must not hide the `relay` package).
PROGRAM = """
import importlib, sys
sys.path.append(sys.argv[1])
for name in sys.argv[2:]:
    importlib.import_module("bench." + name)
    print("imported", name)
"""


def test_every_bench_module_imports() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(BENCH), *MODULES],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:-1] == [f"imported {name}" for name in MODULES]

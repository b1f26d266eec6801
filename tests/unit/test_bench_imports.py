"""Every benchmark module imports: the benches are not type-checked, and a name removed
from the library once broke `make chaos` (bench/chaos_webhooks.py) with no test of its own
noticing until the short chaos run in CI."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", MODULES)
def test_the_bench_module_imports(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The benches run as scripts, so siblings import each other by name too: their folder
    # goes last on the path (bench/relay.py must not hide the `relay` package).
    monkeypatch.setattr(sys, "path", [*sys.path, str(BENCH)])
    module = importlib.import_module(f"bench.{name}")
    assert module.__file__ is not None and Path(module.__file__) == BENCH / f"{name}.py"

"""The layout rules of docs/design.md, checked on the source."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["domain", "outbox", "relay", "consumers", "scheduler", "web", "pipeline", "examples"]
# Which top-level packages each package may import (besides itself).
ALLOWED = {
    "outbox": set(),
    "domain": {"outbox"},
    "relay": {"outbox"},
    "consumers": {"domain", "outbox"},
    "scheduler": {"outbox"},
    "web": {"domain", "outbox", "consumers"},
    "pipeline": {"domain", "outbox", "relay", "consumers", "scheduler", "web", "migrations"},
    # Applications built on the project, loaded only through CONSUMER_MODULES: they use the
    # library's packages as a team's own code would, and no package imports them.
    "examples": {"domain", "outbox", "consumers"},
}


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found & {*PACKAGES, "migrations"}


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package: str) -> None:
    assert _imports(package) - {package} <= ALLOWED[package]


@pytest.mark.parametrize("package", PACKAGES)
def test_public_api_is_explicit(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert sorted(exported) == sorted(set(exported))
    for name in exported:
        assert hasattr(module, name), f"{package}.__all__ names missing {name}"

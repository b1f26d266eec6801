"""The layout rules of docs/design.md, checked on the source."""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumers.middleware import DEFAULT_STACK
from consumers.options import OPTION_SETS

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [
    "domain",
    "outbox",
    "relay",
    "consumers",
    "jobs",
    "scheduler",
    "outbound",
    "web",
    "infra",
    "pipeline",
    "examples",
]
# Which top-level packages each package may import (besides itself).
ALLOWED = {
    "outbox": set(),
    "domain": {"outbox"},
    "relay": {"outbox"},
    "consumers": {"domain", "outbox"},
    # The application: its jobs, groups and the adapters only they use.
    "jobs": {"domain", "outbox", "consumers", "scheduler", "outbound"},
    "scheduler": {"outbox"},
    # Outbound webhooks (ADR 021): endpoints, signing, sending; no application, no web.
    "outbound": {"domain", "outbox"},
    "web": {"domain", "outbox", "consumers", "outbound"},
    # Infrastructure that tests, benches and library users import: never the composition root.
    "infra": {"outbox", "migrations"},
    "pipeline": {
        "domain",
        "outbox",
        "relay",
        "consumers",
        "jobs",
        "scheduler",
        "outbound",
        "web",
        "infra",
        "migrations",
    },
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


# --- The consumer runtime's own shape (ADR 015) ---------------------------------------

# Outside the packages above: who may import the application (`jobs`).
APPLICATION_IMPORTERS = {"pipeline", "jobs", "tests", "bench"}
# What the runtime may import of the project: the outbox, and the domain's base types.
CONSUMERS_MAY_IMPORT = (
    "outbox",
    "domain.events",
    "domain.bus",
    "domain.commands",
    "domain.errors",
    "domain.unit_of_work",
)
# Every module of consumers/, bottom to top. A module imports only from its own layer or
# the ones below it; a new module must be given a layer here.
LAYERS: dict[int, tuple[str, ...]] = {
    # 1. declarations: a job, its options, groups, headers, messages, errors
    1: (
        "consumers.options",
        "consumers.job",
        "consumers.groups",
        "consumers.headers",
        "consumers.messages",
        "consumers.errors",
        "consumers.trust",
        "consumers.metrics",
        "consumers.config",
    ),
    # 2. the source port and its adapters
    2: (
        "consumers.source",
        "consumers.kafka_clients",
        "consumers._internal.group_reform",
        "consumers.kafka_source",
        "consumers.group_protocol",
        "consumers.confluent_commits",
        "consumers.confluent_source",
        "consumers.source_choice",
        "consumers.memory",
    ),
    # 3. the incoming-record model
    3: ("consumers.incoming", "consumers._internal.bounded", "consumers.attempt_history"),
    # 4. the stores: inbox, failed jobs, dispatch, retry tickets
    4: (
        "consumers.store",
        "consumers.retry_tickets",
        "consumers._internal.backends",
        "consumers._internal.failure_records",
        "consumers.failed_jobs",
        "consumers.dispatch",
    ),
    # 5. the job context and the attempt record
    5: ("consumers.context", "consumers.attempt_record"),
    # 6. the middleware
    6: (
        "consumers.middleware",
        "consumers.middleware.base",
        "consumers.middleware.batch_effects",
        "consumers.middleware.fan_out",
        "consumers.middleware.lookahead",
        "consumers.middleware.metrics",
        "consumers.middleware.priority",
        "consumers.middleware.rate_limit",
        "consumers.middleware.retries",
        "consumers.middleware.time_limit",
        "consumers.middleware.unique",
    ),
    # 7. the engine: attempt path, poll batch, offsets, lanes, held retries, liveness,
    # heartbeat, the worker loop
    7: (
        "consumers._internal",
        "consumers._internal.attempt_path",
        "consumers._internal.poll_batch",
        "consumers._internal.after_commit",
        "consumers._internal.held_retries",
        "consumers._internal.offsets",
        "consumers._internal.lanes",
        "consumers._internal.liveness",
        "consumers._internal.keepalive",
        "consumers.heartbeat",
        "consumers.runtime",
    ),
    # 8. the package's API (consumers/__init__.py)
    8: ("consumers",),
    # 9. job authors' test tools: the engine on a database, with no broker
    9: ("consumers.testing", "consumers.testing.records"),
}
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}
PROJECT = {*PACKAGES, "migrations", "infra"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _edges(path: Path) -> list[Edge]:
    """Every import of a project module in one file, TYPE_CHECKING blocks and function
    bodies included; `from package import module` counts as importing the module."""
    source = _module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    found: list[Edge] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    module = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    module = child.module or ""
                for alias in child.names:
                    name = f"{module}.{alias.name}"
                    targets.append(name if _is_module(name) else module)
            for target in targets:
                if target.split(".")[0] in PROJECT:
                    found.append(Edge(source, target, child.lineno, inside))
            visit(child, inside)

    visit(ast.parse(path.read_text()), in_function=False)
    return found


def _consumers_edges() -> list[Edge]:
    return [e for p in sorted((ROOT / "consumers").rglob("*.py")) for e in _edges(p)]


def _top_level_packages() -> set[str]:
    return {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_")) and any(p.rglob("*.py"))
    }


def test_only_the_composition_root_imports_the_application() -> None:
    offenders = {
        f"{e.source}:{e.line} imports {e.target}"
        for package in sorted(_top_level_packages() - APPLICATION_IMPORTERS)
        for path in (ROOT / package).rglob("*.py")
        for e in _edges(path)
        if e.target == "jobs" or e.target.startswith("jobs.")
    }
    assert not offenders, "only pipeline (and tests, bench) import jobs:\n" + "\n".join(
        sorted(offenders)
    )


def test_the_dashboard_never_imports_the_application() -> None:
    assert "jobs" not in _imports("web")


def test_the_runtime_imports_only_the_outbox_and_the_domains_base_types() -> None:
    offenders = {
        f"{e.source}:{e.line} imports {e.target}"
        for e in _consumers_edges()
        if e.target.split(".")[0] != "consumers"
        and not any(e.target == m or e.target.startswith(m + ".") for m in CONSUMERS_MAY_IMPORT)
    }
    assert not offenders, "\n".join(sorted(offenders))


def test_every_runtime_module_has_a_layer() -> None:
    modules = {_module_name(p) for p in (ROOT / "consumers").rglob("*.py")}
    assert sorted(modules - LAYER_OF.keys()) == [], "give these modules a layer in LAYERS"
    assert sorted(LAYER_OF.keys() - modules) == [], "LAYERS names modules that do not exist"


def test_no_runtime_import_points_up_a_layer() -> None:
    offenders = {
        f"{e.source} (layer {LAYER_OF[e.source]}):{e.line} imports {e.target} "
        f"(layer {LAYER_OF[e.target]})"
        for e in _consumers_edges()
        if e.target in LAYER_OF and LAYER_OF[e.target] > LAYER_OF[e.source]
    }
    assert not offenders, "\n".join(sorted(offenders))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycle_inside_the_runtime() -> None:
    graph: dict[str, set[str]] = {}
    for e in _consumers_edges():
        if e.target.split(".")[0] == "consumers":
            graph.setdefault(e.source, set()).add(e.target)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(", ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_level_import_of_a_project_module_inside_the_runtime() -> None:
    offenders = {
        f"{e.source}:{e.line} imports {e.target} inside a function"
        for e in _consumers_edges()
        if e.in_function
    }
    assert not offenders, "\n".join(sorted(offenders))


def test_every_declared_option_belongs_to_a_middleware_of_the_stack_in_its_order() -> None:
    stack = [m.__name__ for m in DEFAULT_STACK]
    owners = [s.middleware for s in OPTION_SETS]
    assert set(owners) <= set(stack)
    assert owners == sorted(owners, key=stack.index)

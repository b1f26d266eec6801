"""A foreign application's registrations (routes, groups), the relay's refusal of a routed
topic whose partition count differs from routing, and what importing the example loads."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from domain.routing import TOPICS, Topic, add_route, topic_for
from relay import Relay, RelayConfig
from relay.errors import PartitionsDiffer
from relay.topics import check_partitions
from tests.fakes import InMemoryPublisher

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def routes() -> Iterator[dict[str, Topic]]:
    """TOPICS as it was; routes a test adds are removed afterwards."""
    saved = dict(TOPICS)
    yield saved
    TOPICS.clear()
    TOPICS.update(saved)


def test_add_route_routes_a_foreign_aggregate_and_accepts_the_same_route_again(
    routes: dict[str, Topic],
) -> None:
    topic = Topic("shelf-events", 6)
    assert add_route("shelf", topic) is topic
    assert add_route("shelf", Topic("shelf-events", 6)) == topic  # a module imported twice
    assert topic_for("shelf") == "shelf-events"


def test_add_route_refuses_a_different_route_or_another_count_for_a_routed_topic(
    routes: dict[str, Topic],
) -> None:
    with pytest.raises(ValueError, match=r"'order' is already routed to 'order-events'"):
        add_route("order", Topic("my-orders", 6))
    with pytest.raises(ValueError, match=r"'product-events' is already routed with 6 partitions"):
        add_route("shelf", Topic("product-events", 4))
    assert "shelf" not in TOPICS
    assert add_route("shelf", Topic("product-events", 6)).name == "product-events"  # shared


def test_check_partitions_names_every_topic_with_its_count_and_routings() -> None:
    counts = {"a": 4, "b": 6, "c": 3}
    with pytest.raises(PartitionsDiffer) as refused:
        check_partitions(counts.get, {"a": 6, "b": 6, "c": 6, "missing": 6})
    assert refused.value.differing == {"a": (4, 6), "c": (3, 6)}
    assert "(a has 4 partitions, routing wants 6; c has 3 partitions, routing wants 6)" in str(
        refused.value
    )
    check_partitions(counts.get, {"a": 4, "missing": 6})  # equal, or missing: not its concern


def test_the_relay_refuses_to_start_when_a_routed_topic_has_another_partition_count(
    tmp_path: Path,
) -> None:
    """Given loan-events auto-created with 4 partitions where routing wants 6, the relay
    raises before it takes any lease, so nothing is published to the wrong partitions."""
    engine = create_engine(f"sqlite:///{tmp_path / 'none.db'}")  # never reached
    publisher = InMemoryPublisher(topics={"loan-events": 4, "library.dlq": 3})
    wanted = {"loan-events": 6, "library.dlq": 3}
    relay = Relay(
        engine, lambda: publisher, RelayConfig(shards=4, topics=tuple(wanted), partitions=wanted)
    )
    with pytest.raises(PartitionsDiffer, match=r"loan-events has 4 partitions, routing wants 6"):
        relay.run(once=True)
    assert publisher.logs == {}
    engine.dispose()


def test_importing_the_example_loads_no_job_module_beyond_the_runtimes_own() -> None:
    """In a fresh interpreter: the modules `examples.library` adds to what importing the
    runtime (consumers, domain, outbox) loads hold no job module, nothing of the composition
    root, the relay, the scheduler or the web app."""
    script = (
        "import json, sys\n"
        "import consumers, domain, outbox\n"
        "before = set(sys.modules)\n"
        "import examples.library.jobs, examples.library.__main__\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    added = json.loads(done.stdout)
    assert "examples.library.jobs" in added
    forbidden = ("consumers", "jobs", "pipeline", "relay", "scheduler", "web")
    assert [m for m in added if m.split(".")[0] in forbidden] == []

"""A failed job's attempts as the runtime records them (through consumers.testing, the real
attempt path and retries middleware): each retry copy carries the attempts so far, the
failed row keeps all of them, and the dashboard's failed-job page lists each one."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import Engine, select

from consumers import JobContext, JobRegistry, job
from consumers.attempt_history import read_attempts
from consumers.groups import Group
from consumers.testing import JobRunner
from domain.events import DomainEvent, EventRegistry
from outbox.schema import failed_jobs_table
from tests.dashboard_helpers import VIEWER, client_for, dashboard_config, sign_in

pytestmark = pytest.mark.integration

EVENTS = EventRegistry()


@EVENTS.register
class Nudged(DomainEvent):
    TYPE = "test.nudged"
    n: int


def test_each_attempt_is_recorded_and_listed_on_the_failed_job(engine: Engine) -> None:
    registry = JobRegistry()

    @job("wobbly", on=Nudged, registry=registry, tries=3, backoff=(60,))
    def wobbly(event: Nudged, ctx: JobContext) -> None:
        raise ConnectionError(f"down at attempt {ctx.attempt}")

    group = Group(f"g-{uuid.uuid4().hex[:8]}", topics=("test-nudges",), jobs=("wobbly",))
    runner = JobRunner(engine, registry=registry, groups=[group], events=EVENTS)
    first = runner.run("wobbly", Nudged(n=1), key="k-1")
    [retry] = first.dispatched
    carried = read_attempts(retry.headers)
    assert [(e["n"], e["error"]) for e in carried] == [(1, "ConnectionError: down at attempt 1")]
    runner.drain()
    with engine.connect() as conn:
        row = conn.execute(select(failed_jobs_table)).one()
    history = read_attempts(json.loads(row.headers))
    assert [e["n"] for e in history] == [1, 2, 3]
    assert [e["error"] for e in history] == [
        f"ConnectionError: down at attempt {n}" for n in (1, 2, 3)
    ]
    assert all(e["ms"] >= 0 for e in history)
    assert history[-1]["at"] == row.failed_at
    client = client_for(dashboard_config(engine, groups={group.name: group}, registry=registry))
    sign_in(client, VIEWER)
    page = client.get(f"/failed/{row.id}").text
    start = page.index('data-testid="attempts-table"')
    table = page[start : page.index("</table>", start)]
    assert table.count("<tr>") == 4
    for n in (1, 2, 3):
        assert f"ConnectionError: down at attempt {n}" in table
    assert "were not recorded" not in page

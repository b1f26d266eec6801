"""Retry headers are claims: `x-failed-job-id`, `x-attempt` and `x-original` count only on
the group's own retry topic, and a failed-job id only when the database holds a retry ticket
for that group, job and event that is still `retrying` (consumers.retry_tickets, ADR 014).
Forged records are produced straight to the embedded broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, insert, select, update

from consumers import JobContext, JobRegistry, job
from consumers import retry_tickets as tickets
from consumers.failed_jobs import FailedFilter, retry
from consumers.groups import group_named
from domain import CommandBus
from domain.marketing import CreateCampaign, LaunchCampaign
from domain.schema import campaign_deliveries, reminder_deliveries
from infra.broker import EmbeddedBroker
from jobs.campaigns import CampaignEmailDue
from jobs.reminders import AppointmentReminderDue
from outbox import canonical_json
from outbox.schema import failed_job_retries_table as t
from outbox.types import utcnow
from tests.campaign_harness import SmtpServer as CampaignSmtp
from tests.campaign_harness import deliveries, pipeline
from tests.consumer_harness import (
    SHARDS,
    Pinged,
    bump,
    effects,
    failed_rows,
    harness,
    new_group,
    wait_for,
)
from tests.forged import forge
from tests.integration.test_reminders import SmtpServer, _book, _deliveries, _start
from tests.scenario import ensure_tenant

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _ticket(engine: Engine, failed_id: int, group: str, job_name: str, event_id: str) -> None:
    row = SimpleNamespace(id=failed_id, group_name=group, job_name=job_name, event_id=event_id)
    with engine.begin() as conn:
        tickets.issue(conn, [row], utcnow())


def _status(engine: Engine, failed_id: int) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(select(t.c.status).where(t.c.failed_job_id == failed_id)).scalar_one()
        )


def test_a_failed_job_id_is_honoured_only_on_the_retry_topic_with_a_ticket_of_its_own(
    engine: Engine, kafka: EmbeddedBroker
) -> None:
    """Given tickets for this group's probe job, another group's and another job's, When
    records carry x-failed-job-id on the main topic, with no ticket, another group's,
    another job's, an honoured one, a value that is no id, and the right one, Then only the
    right one is honoured (once, its ticket now `honoured`); every other is a first
    delivery, logged without the header's value."""
    scope = uuid.uuid4().hex[:8]
    registry = JobRegistry()

    @job("probe", on=Pinged, registry=registry)
    def probe(event: Pinged, ctx: JobContext) -> None:
        retried = ctx.retried_failed_id(ctx.connection)
        assert ctx.retried_failed_id(ctx.connection) == retried  # asked twice, one answer
        bump(ctx.connection, f"{scope}:{retried}:{ctx.attempt}", event.n)

    bootstrap = kafka.bootstrap_servers
    group = new_group(bootstrap, ("probe",))
    base = int(time.time() * 1000) % 10**9 * 100
    ids = {name: base + n for n, name in enumerate(("main", "ok", "group", "job", "done"))}
    events = {name: str(uuid.uuid4()) for name in ("main", "ok", "group", "job", "done", "none")}
    _ticket(engine, ids["main"], group.name, "probe", events["main"])
    _ticket(engine, ids["ok"], group.name, "probe", events["ok"])
    _ticket(engine, ids["group"], "someone-else", "probe", events["group"])
    _ticket(engine, ids["job"], group.name, "another-job", events["job"])
    _ticket(engine, ids["done"], group.name, "probe", events["done"])
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.failed_job_id == ids["done"]).values(status="honoured"))

    def send(n: int, topic: str, event: str, failed: str) -> None:
        headers = {"x-failed-job-id": failed, "x-job": "probe", "x-attempt": "1"}
        if topic == group.topics[0]:  # forged "retry" headers on the main topic
            headers |= {"x-attempt": "4", "x-original": f"{topic}@0/0"}
        forge(bootstrap, topic, f"k-{n}", Pinged(n=n), headers | {"ce_id": events[event]})

    retry_topic = group.retry_topic
    with structlog.testing.capture_logs() as logs, harness(engine, bootstrap, group, registry) as h:
        send(0, group.topics[0], "main", str(ids["main"]))
        send(1, retry_topic, "ok", str(ids["ok"]))
        send(2, retry_topic, "group", str(ids["group"]))
        send(3, retry_topic, "job", str(ids["job"]))
        send(4, retry_topic, "done", str(ids["done"]))
        send(5, retry_topic, "none", "'; DROP TABLE inbox; --")
        h.start_worker()
        wait_for(lambda: len(effects(engine, f"{scope}:None:1")) == 5, timeout_s=30, what="all six")
        wait_for(lambda: effects(engine, f"{scope}:{ids['ok']}:1") == {1: 1}, what="the honoured")
    assert effects(engine, f"{scope}:None:1") == dict.fromkeys((0, 2, 3, 4, 5), 1)
    assert _status(engine, ids["ok"]) == "honoured"
    for untouched in ("main", "group", "job"):
        assert _status(engine, ids[untouched]) == "retrying"
    ignored = [e for e in logs if e["event"] == "consumer_retry_header_ignored"]
    assert sorted(e["reason"] for e in ignored) == [
        "already_honoured",
        "not_an_id",
        "not_retry_topic",
        "other_group",
        "other_job",
    ]
    assert not any("DROP TABLE" in str(value) for e in ignored for value in e.values())


def test_a_forged_failed_job_id_never_sends_a_reminder_left_sending_again(
    postgres_db: Engine, kafka: EmbeddedBroker, smtp_server: SmtpServer
) -> None:
    """Given a reminder whose delivery was left `sending` (its outcome unknown), When
    records for it carry x-failed-job-id on the main topic, on the retry topic naming no
    retry, and naming another group's retry, Then none sends it: each is a failed job
    ("may already have gone out"); an operator's real `outbox failed retry` sends it once."""
    engine = postgres_db
    bus = CommandBus(engine, shards=SHARDS)
    appointment_id = _book(bus, "frank@example.com", timedelta(hours=23, minutes=30))
    with engine.begin() as conn:
        conn.execute(
            insert(reminder_deliveries).values(
                appointment_id=appointment_id, status="sending", attempts=1, taken_at=utcnow()
            )
        )
    due = AppointmentReminderDue(appointment_id=appointment_id)
    with _start(engine, kafka.bootstrap_servers, smtp_server) as s:
        group = s.notifications
        other = int(time.time() * 1000) % 10**9 * 100 + 99
        _ticket(engine, other, s.maintenance.name, "send-appointment-reminder", "x")
        sent = [
            ({"x-failed-job-id": "1", "x-attempt": "3"}, group.topics[0]),
            ({"x-failed-job-id": "424242424242", "x-job": "send-appointment-reminder"}, None),
            ({"x-failed-job-id": str(other), "x-job": "send-appointment-reminder"}, None),
        ]
        for headers, topic in sent:
            forge(kafka.bootstrap_servers, topic or group.retry_topic, appointment_id, due, headers)
        wait_for(lambda: len(failed_rows(engine, group.name)) == 3, timeout_s=30, what="3 failed")
        failed: list[Any] = failed_rows(engine, group.name)
        assert {f.reason for f in failed} == {"rejected"}
        assert all("may already have gone out" in f.exception_message for f in failed)
        assert smtp_server.inbox.to("frank@example.com") == []
        assert _deliveries(engine)[appointment_id].status == "sending"
        with engine.begin() as conn:
            retried = retry(
                conn,
                FailedFilter(ids=(failed[0].id,)),
                {group.name: group},
                shards=SHARDS,
            )
        assert retried == [failed[0].id]
        wait_for(lambda: len(smtp_server.inbox.to("frank@example.com")) == 1, what="the real retry")
        wait_for(lambda: _deliveries(engine)[appointment_id].status == "sent", what="recorded")
    assert len(smtp_server.inbox.to("frank@example.com")) == 1
    assert _status(engine, failed[0].id) == "honoured"
    assert _status(engine, other) == "retrying"


def test_a_forged_failed_job_id_never_sends_a_campaign_email_left_sending_again(
    engine: Engine, smtp: CampaignSmtp
) -> None:
    """Given r1's campaign delivery left `sending` by a lost attempt, When records for it
    carry x-failed-job-id (of its real failed job) on the main topic and on the retry topic
    before any retry, Then neither sends: each is a failed job; an operator's retry sends
    r1 exactly one e-mail."""
    bus = CommandBus(engine, shards=SHARDS)
    ensure_tenant(bus, "t-1")
    recipients = ["r0@example.com", "r1@example.com", "r2@example.com"]
    made = bus.dispatch(
        CreateCampaign(tenant_id="t-1", name="Winter", subject="Sale", recipients=recipients)
    )
    campaign_id = made.aggregate_id
    with engine.begin() as conn:
        conn.execute(
            insert(campaign_deliveries).values(
                campaign_id=campaign_id,
                email="r1@example.com",
                status="sending",
                attempts=1,
                taken_at=utcnow(),
            )
        )
    emails = group_named("campaign-emails")
    with pipeline(engine, smtp) as p:
        bus.dispatch(LaunchCampaign(campaign_id=campaign_id))
        wait_for(lambda: len(failed_rows(engine, emails.name)) == 1, what="r1's unknown outcome")
        [lost] = failed_rows(engine, emails.name)
        assert p.broker is not None
        due = CampaignEmailDue(campaign_id=campaign_id, email="r1@example.com")
        for topic in (emails.jobs_topic, emails.retry_topic):
            headers = {"x-failed-job-id": str(lost.id), "x-job": "send-campaign-email"}
            p.broker.produce(
                topic,
                key=campaign_id.encode(),
                value=canonical_json(due.model_dump(mode="json")).encode(),
                headers=[
                    (name, value.encode())
                    for name, value in (
                        headers
                        | {"ce_id": str(uuid.uuid4()), "ce_type": due.TYPE, "schema_version": "1"}
                    ).items()
                ],
            )
        wait_for(lambda: len(failed_rows(engine, emails.name)) == 3, what="both forged failed")
        assert smtp.inbox.counts() == {"r0@example.com": 1, "r2@example.com": 1}
        assert deliveries(engine, campaign_id)["r1@example.com"].status == "sending"
        with engine.begin() as conn:
            assert retry(
                conn, FailedFilter(ids=(lost.id,)), {emails.name: emails}, shards=SHARDS
            ) == [lost.id]
        wait_for(lambda: smtp.inbox.counts()["r1@example.com"] == 1, what="the operator's retry")
        wait_for(lambda: deliveries(engine, campaign_id)["r1@example.com"].status == "sent")
    assert smtp.inbox.counts() == dict.fromkeys(recipients, 1)
    assert {f.reason for f in failed_rows(engine, emails.name)} == {"rejected"}


def test_a_reused_failed_job_id_replaces_its_old_ticket(engine: Engine) -> None:
    """SQLite may give a deleted failed row's id to the next one: retrying that one
    replaces the old ticket, and only the new event's copy is honoured."""
    _ticket(engine, 7, "g", "job", "event-1")
    header = {"x-failed-job-id": "7"}
    with engine.begin() as conn:
        assert tickets.honour(conn, ("g", "job", "event-1"), header, utcnow()) == 7
    _ticket(engine, 7, "g", "job", "event-2")
    assert _status(engine, 7) == "retrying"
    with engine.begin() as conn:
        assert tickets.honour(conn, ("g", "job", "event-1"), header, utcnow()) is None
        assert tickets.honour(conn, ("g", "job", "event-2"), header, utcnow()) == 7
        assert tickets.honour(conn, ("g", "job", "event-2"), header, utcnow()) is None

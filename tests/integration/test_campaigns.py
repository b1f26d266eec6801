"""Campaign e-mails end to end: fan-out in chunks, one e-mail per recipient over a reused
SMTP connection, deferrals retried, bounces recorded, opt-outs skipped, and the batch's
completion counted (tests/campaign_harness.py: relay, in-memory broker, workers, aiosmtpd)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, select

from domain import CommandBus
from domain.marketing import UnsubscribeRecipient
from domain.schema import campaign_fanouts, campaign_opt_outs, campaign_results, campaigns
from jobs import campaigns as campaign_jobs
from outbox.schema import failed_jobs_table, job_batches_table
from tests.campaign_harness import SmtpServer, campaign, deliveries, pipeline
from tests.kafka_helpers import wait_for
from tests.scenario import ensure_tenant

SHARDS = 8


def _result(engine: Engine, campaign_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(campaign_results).where(campaign_results.c.campaign_id == campaign_id)
        ).one_or_none()


def _batch(engine: Engine, campaign_id: str) -> Any:
    b, f = job_batches_table, campaign_fanouts
    with engine.connect() as conn:
        return conn.execute(
            select(b).join(f, f.c.batch_id == b.c.id).where(f.c.campaign_id == campaign_id)
        ).one()


def _failed(engine: Engine) -> list[Any]:
    f = failed_jobs_table
    with engine.connect() as conn:
        return list(conn.execute(select(f).order_by(f.c.id)).all())


def _completed(engine: Engine, campaign_id: str, timeout_s: float = 30) -> Any:
    wait_for(lambda: _result(engine, campaign_id) is not None, timeout_s=timeout_s, what="done")
    return _result(engine, campaign_id)


def test_each_recipient_gets_one_email_with_unsubscribe_headers_over_one_connection(
    engine: Engine, smtp: SmtpServer
) -> None:
    bus = CommandBus(engine, shards=SHARDS)
    recipients = [f"user{n}@example.com" for n in range(25)]
    with structlog.testing.capture_logs() as logs, pipeline(engine, smtp) as p:
        campaign_id = campaign(bus, recipients)
        result = _completed(engine, campaign_id)
        assert p.pool.connections_opened == 1
    assert smtp.inbox.counts() == dict.fromkeys(recipients, 1)
    [mail] = smtp.inbox.to("user3@example.com")
    assert mail["Subject"] == "30% off"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = (t.strip().strip("<>") for t in mail["List-Unsubscribe"].split(","))
    assert https.startswith("https://shop.example.org/unsubscribe?")
    assert mailto.startswith("mailto:unsubscribe@example.org")
    assert {r.status for r in deliveries(engine, campaign_id).values()} == {"sent"}
    assert (result.sent, result.bounced, result.skipped, result.failed) == (25, 0, 0, 0)
    batch = _batch(engine, campaign_id)
    assert (batch.total, batch.pending, batch.failed) == (25, 0, 0)
    with engine.connect() as conn:
        status = conn.execute(select(campaigns.c.status)).scalar_one()
    assert status == "completed"
    text = "\n".join(map(str, logs))
    assert "u***@example.com" in text and "user3@example.com" not in text


def test_deferral_is_retried_bounce_recorded_and_opted_out_recipient_skipped(
    engine: Engine, smtp: SmtpServer
) -> None:
    bus = CommandBus(engine, shards=SHARDS)
    recipients = ["ann@example.com", "bob@example.com", "cat@example.com", "dan@example.com"]
    smtp.inbox.defer["bob@example.com"] = 2
    smtp.inbox.refuse.add("cat@example.com")
    ensure_tenant(bus)
    with pipeline(engine, smtp) as p:
        bus.dispatch(UnsubscribeRecipient(tenant_id="t-1", email="DAN@example.com"))
        campaign_id = campaign(bus, recipients)
        result = _completed(engine, campaign_id)
        assert p.workers["campaign-emails"].stats.retries == 2
    assert smtp.inbox.counts() == {"ann@example.com": 1, "bob@example.com": 1}
    rows = deliveries(engine, campaign_id)
    assert {e: (r.status, r.attempts) for e, r in rows.items()} == {
        "ann@example.com": ("sent", 1),
        "bob@example.com": ("sent", 3),
        "cat@example.com": ("bounced", 1),
        "dan@example.com": ("skipped", 0),
    }
    assert rows["cat@example.com"].last_error.startswith("SmtpRejected: 550")
    assert "c***@example.com" in rows["cat@example.com"].last_error
    assert "cat@example.com" not in rows["cat@example.com"].last_error
    assert (result.sent, result.bounced, result.skipped, result.failed) == (2, 1, 1, 0)
    assert _failed(engine) == []  # a bounce is not a failed job


def test_a_crash_between_send_and_record_sends_nobody_twice(
    engine: Engine, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the record after one send is lost (its round's transaction fails, then its
    own), that recipient is not sent again: the delivery stays `sending`, the job fails for
    an operator, the campaign counts it; the others of its round are recorded one by one."""
    bus = CommandBus(engine, shards=SHARDS)
    recipients = [f"r{n}@example.com" for n in range(30)]
    record = campaign_jobs._record
    lost = {"r7@example.com": 2}  # the round's transaction, then r7's own

    def lose_one(conn: Any, outcomes: list[Any]) -> None:
        if any(lost.get(email) and status == "sent" for _, email, status, _, _ in outcomes):
            lost["r7@example.com"] -= 1
            raise ConnectionResetError("the database went away before the record committed")
        record(conn, outcomes)

    monkeypatch.setattr(campaign_jobs, "_record", lose_one)
    with pipeline(engine, smtp) as p:
        campaign_id = campaign(bus, recipients)
        result = _completed(engine, campaign_id)
        assert p.workers["campaign-emails"].stats.failed == 1
    assert smtp.inbox.counts() == dict.fromkeys(recipients, 1)
    assert deliveries(engine, campaign_id)["r7@example.com"].status == "sending"
    [failed] = _failed(engine)
    assert failed.reason == "rejected" and "may already have gone out" in failed.exception_message
    assert "r7@example.com" not in failed.exception_message
    assert (result.sent, result.failed) == (29, 1)
    assert _batch(engine, campaign_id).failed == 1


def test_a_retried_coordinator_resumes_after_its_last_chunk(
    engine: Engine, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given chunks of 10 and the coordinator failing after its second chunk committed,
    its retry continues from the cursor: everyone once, the batch complete."""
    from jobs import campaign_fanout

    monkeypatch.setattr(campaign_fanout, "CHUNK", 10)
    chunk = campaign_fanout._next_chunk
    calls = [0]

    def crash_after_two(conn: Any, ctx: Any, campaign_id: str) -> int | None:
        calls[0] += 1
        if calls[0] == 3:
            raise ConnectionResetError("the coordinator's database went away")
        return chunk(conn, ctx, campaign_id)

    monkeypatch.setattr(campaign_fanout, "_next_chunk", crash_after_two)
    bus = CommandBus(engine, shards=SHARDS)
    recipients = [f"c{n:02d}@example.com" for n in range(45)]
    with pipeline(engine, smtp) as p:
        campaign_id = campaign(bus, recipients)
        result = _completed(engine, campaign_id)
        assert p.workers["campaigns"].stats.retries == 1
    assert smtp.inbox.counts() == dict.fromkeys(recipients, 1)
    assert result.sent == 45
    assert _batch(engine, campaign_id).total == 45


def test_a_second_unsubscribe_of_an_address_records_nothing(
    engine: Engine, bus: CommandBus
) -> None:
    ensure_tenant(bus)
    first = bus.dispatch(UnsubscribeRecipient(tenant_id="t-1", email="Eve@Example.com"))
    again = bus.dispatch(UnsubscribeRecipient(tenant_id="t-1", email="eve@example.com"))
    assert first.aggregate_id == again.aggregate_id
    with engine.connect() as conn:
        rows = conn.execute(select(campaign_opt_outs.c.email)).scalars().all()
    assert rows == ["eve@example.com"]


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_ten_thousand_recipients_get_one_email_each(engine: Engine, smtp: SmtpServer) -> None:
    bus = CommandBus(engine, shards=SHARDS)
    recipients = [f"p{n:05d}@example.net" for n in range(10_000)]
    started = time.monotonic()
    with pipeline(engine, smtp, senders=2) as p:
        campaign_id = campaign(bus, recipients)
        result = _completed(engine, campaign_id, timeout_s=120)
        assert sum(w.stats.processed for n, w in p.workers.items() if n != "campaigns") >= 10_000
    counts = smtp.inbox.counts()
    assert len(counts) == 10_000 and set(counts.values()) == {1}
    assert (result.sent, result.bounced, result.skipped, result.failed) == (10_000, 0, 0, 0)
    batch = _batch(engine, campaign_id)
    assert (batch.total, batch.pending, batch.failed) == (10_000, 0, 0)
    print(f"10,000 campaign e-mails in {time.monotonic() - started:.1f} s")  # noqa: T201

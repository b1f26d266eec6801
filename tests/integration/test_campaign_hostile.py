"""Hostile recipients between good ones, against a real SMTP server (aiosmtpd) with and
without SMTPUTF8: every good recipient gets exactly one e-mail on the first attempt, and each
bad one ends `not_sent` with its reason and one failed job (never "may have gone out").

CreateCampaign refuses such addresses (tests/unit/test_mail_addresses.py), so they are put
into `campaign_recipients` behind its back, as a replayed old event or a forged record would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from consumers.context import JobTimeout
from domain import CommandBus
from domain.marketing import CreateCampaign, LaunchCampaign
from domain.schema import campaign_recipients, campaign_results
from jobs import campaigns as campaign_jobs
from jobs.smtp_pool import SmtpPool
from outbox.schema import failed_jobs_table
from tests.campaign_harness import (
    SmtpServer,
    campaign,
    deliveries,
    pipeline,
    smtp_server_both_ways,
)
from tests.kafka_helpers import wait_for
from tests.scenario import ensure_tenant

pytestmark = [pytest.mark.integration]

GOOD = [f"{p}{n}@example.com" for p in ("a", "m", "z") for n in range(4)]
NON_ASCII = "юзер@пример.рф"
CRLF = "crlf\r\nRCPT TO:<victim@example.com>@example.com"
UNBUILDABLE = "build-fails@example.com"
BAD = {
    NON_ASCII: "is not ASCII",
    CRLF: "holds a control character",
    UNBUILDABLE: "its message could not be built",
}


server = smtp_server_both_ways


def _failing_for(email: str) -> Callable[..., Callable[[str], bytes]]:
    real = campaign_jobs.message_maker

    def maker(campaign: Any, **kwargs: Any) -> Callable[[str], bytes]:
        make = real(campaign, **kwargs)

        def build(address: str) -> bytes:
            if address == email:
                raise ValueError(f"cannot build a message for {address}")
            return make(address)

        return build

    return maker


def _launch_with_hostile_recipients(bus: CommandBus, engine: Engine) -> str:
    ensure_tenant(bus)
    stand_ins = [f"stand-in{n}@example.com" for n in range(len(BAD))]
    campaign_id = bus.dispatch(
        CreateCampaign(
            tenant_id="t-1", name="Winter sale", subject="30% off", recipients=GOOD + stand_ins
        )
    ).aggregate_id
    r = campaign_recipients
    with engine.begin() as conn:  # the stand-ins become the hostile addresses
        for stand_in, email in zip(stand_ins, BAD, strict=True):
            conn.execute(
                update(r).where(r.c.campaign_id == campaign_id, r.c.email == stand_in),
                {"email": email},
            )
    bus.dispatch(LaunchCampaign(campaign_id=campaign_id))
    return campaign_id


def test_hostile_recipients_fail_alone_and_every_good_one_gets_one_email(
    engine: Engine, server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(campaign_jobs, "message_maker", _failing_for(UNBUILDABLE))
    bus = CommandBus(engine, shards=8)
    with pipeline(engine, server) as p:
        campaign_id = _launch_with_hostile_recipients(bus, engine)
        wait_for(lambda: _result(engine, campaign_id) is not None, timeout_s=60, what="done")
        assert p.workers["campaign-emails"].stats.retries == 0
    assert server.inbox.counts() == dict.fromkeys(GOOD, 1)
    assert sorted(server.inbox.rcpts) == sorted(GOOD)  # no bad one reached RCPT
    assert server.inbox.mails == len(GOOD)
    rows = deliveries(engine, campaign_id)
    assert {e: (rows[e].status, rows[e].attempts) for e in GOOD} == dict.fromkeys(GOOD, ("sent", 1))
    for email, reason in BAD.items():
        assert rows[email].status == "not_sent", email
        assert reason in rows[email].last_error, email
        assert email not in rows[email].last_error  # masked
    failed = _failed(engine)
    assert len(failed) == len(BAD)
    for row in failed:
        assert (row.reason, row.attempts) == ("rejected", 1)
        assert "was not sent" in row.exception_message
        assert "may have gone out" not in row.exception_message
        assert "\r" not in row.exception_message
    result = _result(engine, campaign_id)
    assert (result.sent, result.bounced, result.skipped, result.failed) == (len(GOOD), 0, 0, 3)


def _result(engine: Engine, campaign_id: str) -> Any:
    r = campaign_results
    with engine.connect() as conn:
        return conn.execute(select(r).where(r.c.campaign_id == campaign_id)).one_or_none()


def _failed(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(failed_jobs_table)).all())


def test_an_email_cut_short_by_its_time_limit_before_data_is_sent_again_once(
    engine: Engine, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the time limit firing inside RCPT for one recipient (its worker is replaced),
    the delivery is recorded `failed` (known not handed over), not left `sending`: the
    retry sends it, once, and nobody else gets two."""
    recipients = [f"t{n}@example.com" for n in range(6)]
    envelope = SmtpPool._envelope
    cut = ["t2@example.com"]

    def time_runs_out(pool: SmtpPool, smtp_: Any, sender: str, recipient: str) -> None:
        if recipient in cut:
            cut.remove(recipient)
            pool._local.open = True  # as far as MAIL, as a real cut would leave it
            raise JobTimeout("ran past its 120 s timeout")
        envelope(pool, smtp_, sender, recipient)

    monkeypatch.setattr(SmtpPool, "_envelope", time_runs_out)
    bus = CommandBus(engine, shards=8)
    with pipeline(engine, smtp, senders=2):
        campaign_id = campaign(bus, recipients)
        wait_for(lambda: _result(engine, campaign_id) is not None, timeout_s=60, what="done")
    assert smtp.inbox.counts() == dict.fromkeys(recipients, 1)
    rows = deliveries(engine, campaign_id)
    assert (rows["t2@example.com"].status, rows["t2@example.com"].attempts) == ("sent", 2)
    assert _failed(engine) == []


@pytest.mark.parametrize(
    ("email", "why"),
    [
        ("x" * 10_000 + "@example.com", "longer than 254"),  # a DataError if it were stored
        ("nul\x00@example.com", "control character"),  # PostgreSQL text cannot hold NUL
        ("юзер@пример.рф", "is not ASCII"),
        ("ANN@example.com", ""),  # another spelling of a recipient's: a second e-mail
        ("ann@example.com.evil.example", ""),
    ],
    ids=["10k", "nul", "non-ascii", "upper-case", "outsider"],
)
def test_a_forged_send_record_for_another_address_fails_after_one_attempt_and_sends_nothing(
    engine: Engine, smtp: SmtpServer, email: str, why: str
) -> None:
    """A send job produced straight into the outbox (no command checked its address) naming
    an address that is not, exactly, one of the campaign's recipients: record_mismatch (with
    the envelope's trouble, if any), no delivery row, nothing sent (ADR 014)."""
    bus = CommandBus(engine, shards=8)
    with pipeline(engine, smtp) as p:
        campaign_id = campaign(bus, ["ann@example.com"])
        wait_for(lambda: _result(engine, campaign_id) is not None, timeout_s=60, what="done")
        forged = campaign_jobs.CampaignEmailDue(campaign_id=campaign_id, email=email)
        with engine.begin() as conn:
            p.dispatcher.dispatch(conn, campaign_jobs.SEND_JOB, forged, key=campaign_id)
        wait_for(lambda: len(_failed(engine)) == 1, timeout_s=60, what="the failed job")
    [failed] = _failed(engine)
    assert (failed.reason, failed.attempts) == ("record_mismatch", 1)
    assert why in failed.exception_message and "nothing was sent" in failed.exception_message
    assert email not in failed.exception_message
    assert smtp.inbox.counts() == {"ann@example.com": 1}
    assert sorted(deliveries(engine, campaign_id)) == ["ann@example.com"]

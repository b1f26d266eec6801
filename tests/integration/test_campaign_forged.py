"""Forged campaign records produced straight to the embedded broker, against a real SMTP
server (aiosmtpd): an e-mail due to an address that is not the campaign's, a launch of a
draft, a batch's completion before it finished. Each ends in failed jobs with its reason and
changes nothing; the real records, relayed afterwards, still do their work (ADR 014)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, select

from consumers import GROUPS, Group, jobs
from consumers.messages import BatchFinished
from domain import CommandBus, registry
from domain.marketing import CampaignLaunched, CreateCampaign, LaunchCampaign
from domain.schema import campaign_fanouts, campaign_results, campaigns
from infra.broker import EmbeddedBroker
from jobs.campaign_fanout import COMPLETE_JOB
from jobs.campaigns import SEND_JOB, CampaignEmailDue
from jobs.config import AppConfig
from jobs.mail import Mailer
from jobs.smtp_pool import SmtpPool
from outbox.schema import job_batches_table
from tests.campaign_harness import SmtpServer, deliveries, signer
from tests.consumer_harness import Harness, harness, wait_for
from tests.forged import failed_reasons, forge
from tests.kafka_helpers import fresh_group
from tests.scenario import ensure_tenant

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CAMPAIGNS, EMAILS = GROUPS["campaigns"], GROUPS["campaign-emails"]
RECIPIENTS = [f"r{n}@example.com" for n in range(6)]


def _groups(bootstrap: str) -> tuple[Group, Group]:
    """The campaigns and campaign-emails groups under fresh names: the broker may be shared."""
    return fresh_group(bootstrap, CAMPAIGNS, jobs), fresh_group(bootstrap, EMAILS, jobs)


@contextmanager
def _pipeline(
    engine: Engine, bootstrap: str, smtp: SmtpServer, fan_out: Group, senders: Group
) -> Iterator[Harness]:
    pool = SmtpPool(Mailer(port=smtp.port, from_address="news@example.org"))
    config = AppConfig(campaign_smtp=pool, unsubscribe=signer())
    try:
        with harness(
            engine, bootstrap, fan_out, jobs, events=registry, job_config=config,
            groups=(senders,),
        ) as h:  # fmt: skip
            yield h
    finally:
        pool.close()


def _draft(bus: CommandBus) -> str:
    ensure_tenant(bus, "t-1")
    made = CreateCampaign(
        tenant_id="t-1", name="Winter sale", subject="30% off", recipients=RECIPIENTS
    )
    return bus.dispatch(made).aggregate_id


def _failed(engine: Engine, group: str, count: int) -> dict[str, tuple[str | None, str]]:
    wait_for(lambda: len(failed_reasons(engine, group)) >= count, timeout_s=60, what="failed")
    return failed_reasons(engine, group)


def _one(engine: Engine, query: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).one_or_none()


def _result(engine: Engine, campaign_id: str) -> Any:
    r = campaign_results
    return _one(engine, select(r).where(r.c.campaign_id == campaign_id))


def _status(engine: Engine, campaign_id: str) -> str:
    return str(_one(engine, select(campaigns.c.status).where(campaigns.c.id == campaign_id))[0])


def _dispatched(engine: Engine) -> None:
    """Wait until the fan-out dispatched every recipient."""
    f = campaign_fanouts
    query = select(f.c.campaign_id).where(f.c.dispatched_at.is_not(None))
    wait_for(lambda: _one(engine, query) is not None, timeout_s=60, what="the fan-out")


def _completed(engine: Engine, campaign_id: str) -> Any:
    wait_for(lambda: _result(engine, campaign_id) is not None, timeout_s=90, what="completed")
    return _result(engine, campaign_id)


def test_a_forged_email_due_to_an_outside_address_sends_nothing(
    postgres_db: Engine, kafka: EmbeddedBroker, smtp: SmtpServer
) -> None:
    """Given a launched campaign, When CampaignEmailDue records name an outside address and
    another spelling of a recipient's (produced before and after the real ones, so that they
    sit among them in the senders' look-ahead), Then each is a failed job (record_mismatch)
    with no delivery row, nothing reaches the SMTP server for them, and every recipient
    gets exactly one e-mail."""
    bus = CommandBus(postgres_db, shards=8)
    bootstrap = kafka.bootstrap_servers
    fan_out, senders = _groups(bootstrap)
    campaign_id = _draft(bus)
    bus.dispatch(LaunchCampaign(campaign_id=campaign_id))
    headers = {"x-job": SEND_JOB}

    def forged(email: str) -> str:
        due = CampaignEmailDue(campaign_id=campaign_id, email=email)
        return forge(bootstrap, senders.jobs_topic, campaign_id, due, headers)

    sent = [forged("outsider@evil.example"), forged("R1@example.com")]
    with _pipeline(postgres_db, bootstrap, smtp, fan_out, senders) as h:
        h.start_relay()
        h.start_worker()
        _dispatched(postgres_db)
        sent.append(forged("other.outsider@evil.example"))
        h.start_worker(senders)
        result = _completed(postgres_db, campaign_id)
        failed = _failed(postgres_db, senders.name, len(sent))
    assert {ce_id: failed[ce_id] for ce_id in sent} == dict.fromkeys(
        sent, (SEND_JOB, "record_mismatch")
    )
    assert len(failed) == len(sent)
    assert smtp.inbox.counts() == dict.fromkeys(RECIPIENTS, 1)
    assert sorted(smtp.inbox.rcpts) == sorted(RECIPIENTS)
    assert sorted(deliveries(postgres_db, campaign_id)) == sorted(RECIPIENTS)
    assert (result.sent, result.failed) == (len(RECIPIENTS), 0)


def test_a_forged_launch_of_a_draft_opens_nothing_and_the_real_launch_sends_to_all(
    postgres_db: Engine, kafka: EmbeddedBroker, smtp: SmtpServer
) -> None:
    """Given a draft campaign, When a CampaignLaunched keyed to it is produced straight to
    campaign-events, Then it fails (not_verified) and no fan-out is opened; the real launch,
    relayed afterwards, sends every recipient exactly one e-mail; a launch record naming
    another tenant afterwards fails (record_mismatch) and sends nothing more."""
    bus = CommandBus(postgres_db, shards=8)
    bootstrap = kafka.bootstrap_servers
    fan_out, senders = _groups(bootstrap)
    campaign_id = _draft(bus)
    launch = CampaignLaunched(tenant_id="t-1", recipients_count=len(RECIPIENTS))
    sent = [forge(bootstrap, "campaign-events", campaign_id, launch)]
    with _pipeline(postgres_db, bootstrap, smtp, fan_out, senders) as h:
        h.start_worker()
        h.start_worker(senders)
        failed = _failed(postgres_db, fan_out.name, 1)
        assert failed[sent[0]] == ("fan-out-campaign", "not_verified")
        assert _one(postgres_db, select(campaign_fanouts)) is None
        assert _status(postgres_db, campaign_id) == "draft"
        bus.dispatch(LaunchCampaign(campaign_id=campaign_id))
        h.start_relay()
        result = _completed(postgres_db, campaign_id)
        other = CampaignLaunched(tenant_id="t-2", recipients_count=len(RECIPIENTS))
        sent.append(forge(bootstrap, "campaign-events", campaign_id, other))
        failed = _failed(postgres_db, fan_out.name, 2)
        assert failed[sent[1]] == ("fan-out-campaign", "record_mismatch")
    assert len(failed) == 2
    assert smtp.inbox.counts() == dict.fromkeys(RECIPIENTS, 1)
    assert (result.sent, result.failed) == (len(RECIPIENTS), 0)
    assert failed_reasons(postgres_db, senders.name) == {}


def test_a_forged_batch_finished_completes_nothing_until_the_batch_really_finished(
    postgres_db: Engine, kafka: EmbeddedBroker, smtp: SmtpServer
) -> None:
    """Given a launched campaign whose fan-out batch is open and no e-mail sent yet, When a
    BatchFinished naming its batch is produced straight to the campaigns' jobs topic, Then
    it fails (not_verified) and the campaign stays launched; once the e-mails are sent the
    real completion records the right counts, and a later forged summary with other counts
    fails (record_mismatch)."""
    bus = CommandBus(postgres_db, shards=8)
    bootstrap = kafka.bootstrap_servers
    fan_out, senders = _groups(bootstrap)
    campaign_id = _draft(bus)
    bus.dispatch(LaunchCampaign(campaign_id=campaign_id))
    headers = {"x-job": COMPLETE_JOB}
    with _pipeline(postgres_db, bootstrap, smtp, fan_out, senders) as h:
        h.start_relay()
        h.start_worker()
        _dispatched(postgres_db)
        batch_id = _one(postgres_db, select(campaign_fanouts.c.batch_id))[0]
        early = BatchFinished(
            batch_id=batch_id, name=f"campaign {campaign_id}", total=len(RECIPIENTS), failed=0
        )
        sent = [forge(bootstrap, fan_out.jobs_topic, batch_id, early, headers)]
        failed = _failed(postgres_db, fan_out.name, 1)
        assert failed[sent[0]] == (COMPLETE_JOB, "not_verified")
        assert _status(postgres_db, campaign_id) == "launched"
        assert _result(postgres_db, campaign_id) is None
        batch = _one(postgres_db, select(job_batches_table.c.pending))
        assert batch.pending == len(RECIPIENTS)
        h.start_worker(senders)
        result = _completed(postgres_db, campaign_id)
        late = early.model_copy(update={"failed": 3})
        sent.append(forge(bootstrap, fan_out.jobs_topic, batch_id, late, headers))
        failed = _failed(postgres_db, fan_out.name, 2)
        assert failed[sent[1]] == (COMPLETE_JOB, "record_mismatch")
    assert len(failed) == 2
    assert _status(postgres_db, campaign_id) == "completed"
    assert (result.sent, result.bounced, result.skipped, result.failed) == (6, 0, 0, 0)
    assert smtp.inbox.counts() == dict.fromkeys(RECIPIENTS, 1)

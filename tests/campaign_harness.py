"""Campaigns end to end without Kafka: the real relay publishes into the in-memory broker,
real workers of the `campaigns` and `campaign-emails` groups read it, and a real SMTP
server (aiosmtpd) on 127.0.0.1 receives the e-mails; it can defer (4xx) or refuse (5xx)
chosen addresses."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from sqlalchemy import Engine, select

from consumers import JobRegistry, jobs
from consumers.dispatch import Dispatcher
from consumers.groups import BoundGroup, group_named
from consumers.memory import MemoryBroker, MemorySource
from consumers.runtime import Worker, WorkerConfig
from domain import CommandBus
from domain.events import registry
from domain.marketing import CreateCampaign, LaunchCampaign
from domain.routing import TOPICS
from domain.schema import campaign_deliveries
from jobs.campaign_fanout import COMPLETE_JOB, FANOUT_JOB
from jobs.campaigns import SEND_JOB
from jobs.config import AppConfig
from jobs.mail import Mailer
from jobs.smtp_pool import SmtpPool
from relay import Relay, RelayConfig
from relay.kafka import partition_for
from relay.publisher import Delivered
from relay.publisher import Message as Outgoing
from tests.scenario import ensure_tenant
from web import KeyRing, SigningKey, UnsubscribeSigner

__all__ = [
    "Pipeline",
    "SmtpServer",
    "campaign",
    "deliveries",
    "pipeline",
    "signer",
    "smtp_server_both_ways",
]

SHARDS = 8


@dataclass
class Inbox:
    """What the SMTP server received, and what it answers: `defer` (address -> how many
    times to answer 451 first), `refuse` (addresses answered 550), `stall` (addresses whose
    RCPT is answered only after `stall_s`, past a client's timeout). `rcpts` lists every
    RCPT address it was given, `mails` every MAIL (a client's envelopes)."""

    messages: list[tuple[list[str], bytes]] = field(default_factory=list)
    defer: Counter[str] = field(default_factory=Counter)
    refuse: set[str] = field(default_factory=set)
    stall: set[str] = field(default_factory=set)
    stall_s: float = 1.0
    rcpts: list[str] = field(default_factory=list)
    mails: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        with self.lock:
            self.mails += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        with self.lock:
            self.rcpts.append(address)
        if address in self.stall:
            await asyncio.sleep(self.stall_s)
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: no such user"
        if self.defer[address] > 0:
            self.defer[address] -= 1
            return "451 4.7.1 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # Parsed when a test looks at it: parsing 10,000 here would slow the senders down.
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(r for rcpt, _ in self.messages for r in rcpt)

    def to(self, address: str) -> list[Message]:
        with self.lock:
            raw = [m for rcpt, m in self.messages if address in rcpt]
        return [message_from_bytes(m, policy=default) for m in raw]


class SmtpServer:
    """aiosmtpd on a free port; `smtputf8`: whether it offers SMTPUTF8 (RFC 6531)."""

    def __init__(self, *, smtputf8: bool = False) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.inbox = Inbox()
        self.smtputf8 = smtputf8
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=self.smtputf8
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture(params=[False, True], ids=["plain", "smtputf8"])
def smtp_server_both_ways(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """The server without, then with SMTPUTF8 offered (assign it to a test module's name)."""
    smtp = SmtpServer(smtputf8=request.param)
    smtp.start()
    yield smtp
    smtp.stop()


TEST_KEY = "unsubscribe-test-key-0123456789"


def signer(key: str = TEST_KEY) -> UnsubscribeSigner:
    ring = KeyRing([SigningKey("k1", SecretStr(key))])
    return UnsubscribeSigner(ring, "https://shop.example.org", mailto="unsubscribe@example.org")


class _BrokerPublisher:
    """The relay's Publisher port onto the in-memory broker."""

    def __init__(self, broker: MemoryBroker, partitions: dict[str, int]) -> None:
        self._broker, self._partitions = broker, partitions

    def partitions(self, topic: str) -> int | None:
        return self._partitions.get(topic)

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Delivered]:
        out = []
        for m in messages:
            partition = partition_for(m.key, self._partitions[m.topic])
            record = self._broker.produce(
                m.topic, key=m.key, value=m.value, headers=m.headers, partition=partition
            )
            out.append(Delivered(record.partition, record.offset))
        return out

    def flush(self, batch: Any, timeout_s: float) -> list[Any]:
        return list(batch)

    def close(self, timeout_s: float = 5.0) -> None:
        return


def _registry(backoff_s: float) -> JobRegistry:
    test_jobs = JobRegistry()
    for name in (FANOUT_JOB, SEND_JOB, COMPLETE_JOB):
        declared = jobs.get(name)
        options = {**declared.options, "backoff": lambda _attempt: backoff_s}
        test_jobs.add(replace(declared, options=options))
    return test_jobs


@dataclass
class Pipeline:
    engine: Engine
    bus: CommandBus
    smtp: SmtpServer
    pool: SmtpPool
    workers: dict[str, Worker]
    dispatcher: Dispatcher
    broker: MemoryBroker | None = None  # what the workers read (forged records go here)


@contextmanager
def pipeline(
    engine: Engine, smtp: SmtpServer, *, backoff_s: float = 0.2, senders: int = 1
) -> Iterator[Pipeline]:
    """A relay and workers in threads: one of `campaigns`, `senders` of `campaign-emails`."""
    groups = [group_named("campaigns"), group_named("campaign-emails")]
    partitions = {t.name: t.partitions for t in TOPICS.values()}
    for group in groups:
        partitions.update(group.internal_topics())
    broker = MemoryBroker(partitions)
    test_jobs = _registry(backoff_s)
    dispatcher = Dispatcher(groups, test_jobs, shards=SHARDS)
    bus = CommandBus(engine, shards=SHARDS)
    pool = SmtpPool(Mailer(port=smtp.port, from_address="news@example.org"))
    config = AppConfig(campaign_smtp=pool, unsubscribe=signer())
    relay = Relay(
        engine,
        lambda: _BrokerPublisher(broker, partitions),  # type: ignore[arg-type, return-value]
        RelayConfig(shards=SHARDS, lease_ttl_s=5.0, poll_max_s=0.05, backoff_base_s=0.2),
    )
    workers = {}
    runners: list[Any] = [relay]
    for group, count in ((groups[0], 1), (groups[1], senders)):
        for n in range(count):
            worker = Worker(
                engine,
                BoundGroup(group, test_jobs),
                WorkerConfig(bootstrap_servers="memory", shards=SHARDS, poll_timeout_ms=20),
                bus=bus,
                dispatcher=dispatcher,
                job_config=config,
                events=registry,
                source=lambda name=group.name: MemorySource(broker, name),
            )
            workers[f"{group.name}-{n}" if count > 1 else group.name] = worker
            runners.append(worker)
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    try:
        yield Pipeline(engine, bus, smtp, pool, workers, dispatcher, broker)
    finally:
        for runner in runners:
            runner.stop()
        for thread in threads:
            thread.join(timeout=30)
        pool.close()


def campaign(bus: CommandBus, recipients: list[str], *, tenant: str = "t-1") -> str:
    """A campaign created and launched."""
    ensure_tenant(bus, tenant)
    campaign_id = bus.dispatch(
        CreateCampaign(
            tenant_id=tenant, name="Winter sale", subject="30% off", recipients=recipients
        )
    ).aggregate_id
    bus.dispatch(LaunchCampaign(campaign_id=campaign_id))
    return campaign_id


def deliveries(engine: Engine, campaign_id: str) -> dict[str, Any]:
    d = campaign_deliveries
    with engine.connect() as conn:
        rows = conn.execute(select(d).where(d.c.campaign_id == campaign_id)).all()
    return {r.email: r for r in rows}

"""Appointment reminders end to end: the coordinator and the per-appointment job run by
consumers.testing (the real attempt path, no broker) with a real SMTP server (aiosmtpd) on
127.0.0.1; the operator's retry after a lost outcome through a real relay, workers and the
embedded broker."""

from __future__ import annotations

import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any

import pytest
import structlog
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, select, update

from consumers import Group, JobRegistry, jobs
from consumers.failed_jobs import FailedFilter, retry
from consumers.messages import ScheduledJobDue
from consumers.testing import JobResult, JobRunner
from domain import CommandBus
from domain.appointments import BookAppointment, MarkAppointmentReminderSent
from domain.events import registry
from domain.schema import appointments, reminder_deliveries
from infra.broker import EmbeddedBroker
from jobs import reminders
from jobs.config import AppConfig
from jobs.mail import Mailer
from outbox.types import utcnow
from tests.consumer_harness import SHARDS, Harness, failed_rows, harness, new_group, wait_for
from tests.scenario import ensure_tenant

COORDINATOR, PER_APPOINTMENT = "send-appointment-reminders", "send-appointment-reminder"


@dataclass
class Inbox:
    """What the SMTP server received."""

    messages: list[tuple[list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=default))
        )
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for rcpt, m in self.messages if address in rcpt]


class SmtpServer:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _registry(backoff_s: float) -> JobRegistry:
    """The real reminder jobs with a test-sized back-off."""
    test_jobs = JobRegistry()
    for name in (COORDINATOR, PER_APPOINTMENT):
        declared = jobs.get(name)
        options = {**declared.options, "backoff": lambda _attempt: backoff_s}
        test_jobs.add(replace(declared, group=None, options=options))
    return test_jobs


def _book(bus: CommandBus, email: str, starts_in: timedelta, *, tenant: str = "t-1") -> str:
    ensure_tenant(bus, tenant)
    return bus.dispatch(
        BookAppointment(
            tenant_id=tenant,
            customer_email=email,
            service="Haircut",
            starts_at=utcnow() + starts_in,
        )
    ).aggregate_id


def _sent_at(engine: Engine) -> dict[str, datetime | None]:
    with engine.connect() as conn:
        return dict(conn.execute(select(appointments.c.id, appointments.c.reminder_sent_at)).all())


def _deliveries(engine: Engine) -> dict[str, Any]:
    d = reminder_deliveries
    with engine.connect() as conn:
        return {r.appointment_id: r for r in conn.execute(select(d)).all()}


@dataclass
class Setup:
    h: Harness
    maintenance: Any
    notifications: Any
    coordinator: Any
    sender: Any

    def fire(self) -> None:
        due = ScheduledJobDue(job=COORDINATOR, slot=utcnow(), manual=True)
        self.h.in_transaction(lambda c: self.h.dispatcher.dispatch(c, COORDINATOR, due))


@contextmanager
def _start(
    engine: Engine, bootstrap: str, smtp: SmtpServer, *, backoff_s: float = 0.2
) -> Iterator[Setup]:
    test_jobs = _registry(backoff_s)
    maintenance = new_group(bootstrap, (COORDINATOR,))
    notifications = new_group(bootstrap, (PER_APPOINTMENT,))
    config = AppConfig(mailer=Mailer(port=smtp.port, from_address="salon@example.org"))
    with harness(
        engine, bootstrap, maintenance, test_jobs, events=registry, job_config=config
    ) as h:
        h.groups.append(notifications)
        h.start_relay()
        coordinator = h.start_worker()
        sender = h.start_worker(notifications)
        yield Setup(h, maintenance, notifications, coordinator, sender)


@dataclass
class Direct:
    """The two groups' jobs on consumers.testing: fire the coordinator, drain the outbox."""

    runner: JobRunner
    notifications: Group

    def fire(self) -> None:
        due = ScheduledJobDue(job=COORDINATOR, slot=utcnow(), manual=True)
        assert self.runner.dispatch(COORDINATOR, due)

    def drain(self, *, retries: bool = True) -> list[tuple[str | None, str]]:
        return _outcomes(self.runner.drain(retries=retries))


def _outcomes(results: list[JobResult]) -> list[tuple[str | None, str]]:
    return [(r.job, r.outcome) for r in results]


def _direct(engine: Engine, smtp: SmtpServer) -> Direct:
    maintenance = Group(f"g-{uuid.uuid4().hex[:10]}", topics=(), jobs=(COORDINATOR,))
    notifications = Group(f"g-{uuid.uuid4().hex[:10]}", topics=(), jobs=(PER_APPOINTMENT,))
    config = AppConfig(mailer=Mailer(port=smtp.port, from_address="salon@example.org"))
    runner = JobRunner(
        engine, config=config, registry=_registry(0.2), groups=[maintenance, notifications]
    )
    return Direct(runner, notifications)


def test_each_due_appointment_gets_one_reminder_and_a_second_run_sends_nothing(
    engine: Engine, smtp: SmtpServer
) -> None:
    bus = CommandBus(engine, shards=SHARDS)
    due = {
        _book(bus, "alice@example.com", timedelta(hours=23, minutes=30)): "alice@example.com",
        _book(bus, "bob@example.net", timedelta(hours=23, minutes=5)): "bob@example.net",
    }
    later = _book(bus, "carol@example.com", timedelta(hours=25))
    soon = _book(bus, "dave@example.com", timedelta(hours=2))
    reminded = _book(bus, "erin@example.com", timedelta(hours=23, minutes=30))
    bus.dispatch(MarkAppointmentReminderSent(appointment_id=reminded))
    before = _sent_at(engine)[reminded]
    s = _direct(engine, smtp)
    with structlog.testing.capture_logs() as logs:
        s.fire()
        assert s.drain() == [
            (COORDINATOR, "done"),
            (PER_APPOINTMENT, "done"),
            (PER_APPOINTMENT, "done"),
        ]
        s.fire()
        assert s.drain() == [(COORDINATOR, "done")]  # the second run dispatches nothing
    assert len(smtp.inbox.messages) == 2
    for appointment_id, address in due.items():
        [mail] = smtp.inbox.to(address)
        assert mail["Subject"].startswith("Reminder: Haircut on ")
        assert mail["Subject"].endswith(" UTC")
        assert mail["Message-ID"] == f"<appointment-reminder.{appointment_id}@example.org>"
        assert mail["From"] == "salon@example.org"
    sent = _sent_at(engine)
    assert all(sent[a] is not None for a in due)
    assert sent[later] is None and sent[soon] is None
    assert sent[reminded] == before
    deliveries = _deliveries(engine)
    assert {a: (r.status, r.attempts) for a, r in deliveries.items()} == dict.fromkeys(
        due, ("sent", 1)
    )
    text = "\n".join(str(entry) for entry in logs)
    assert "a***@example.com" in text and "b***@example.net" in text
    for address in due.values():
        assert address not in text


def test_a_crash_between_send_and_mark_does_not_send_twice_and_an_operator_retry_sends_once(
    engine: Engine, kafka: EmbeddedBroker, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = CommandBus(engine, shards=SHARDS)
    appointment_id = _book(bus, "frank@example.com", timedelta(hours=23, minutes=30))
    finish = reminders._finish
    crashes = [1]

    def lose_the_outcome_once(conn: Any, appointment: str, status: str, *args: Any) -> None:
        if status == "sent" and crashes:
            crashes.pop()
            raise ConnectionResetError("the database went away before the mark committed")
        finish(conn, appointment, status, *args)

    monkeypatch.setattr(reminders, "_finish", lose_the_outcome_once)
    with _start(engine, kafka.bootstrap_servers, smtp) as s:
        s.fire()
        wait_for(lambda: s.sender.stats.failed == 1, what="the unknown outcome to fail")
        assert len(smtp.inbox.to("frank@example.com")) == 1  # not sent a second time
        [failed] = failed_rows(engine, s.notifications.name)
        assert (failed.reason, failed.attempts) == ("rejected", 2)
        assert "may already have gone out" in failed.exception_message
        assert "`outbox failed retry` sends it again" in failed.exception_message
        assert _deliveries(engine)[appointment_id].status == "sending"
        assert _sent_at(engine)[appointment_id] is None
        s.fire()  # the next hourly run leaves it alone: its delivery is taken
        wait_for(lambda: s.coordinator.stats.processed == 2, what="the second run")
        with engine.begin() as conn:
            retried = retry(
                conn,
                FailedFilter(group=s.notifications.name),
                {s.notifications.name: s.notifications},
                shards=SHARDS,
            )
        assert retried == [failed.id]
        wait_for(lambda: s.sender.stats.processed == 1, what="the operator's retry")
        time.sleep(0.5)
    mails = smtp.inbox.to("frank@example.com")
    assert len(mails) == 2  # the lost one and the operator's, one each
    assert {m["Message-ID"] for m in mails} == {
        f"<appointment-reminder.{appointment_id}@example.org>"
    }
    delivery = _deliveries(engine)[appointment_id]
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    assert _sent_at(engine)[appointment_id] is not None
    assert failed_rows(engine, s.notifications.name) == []


def test_with_the_smtp_server_down_the_reminder_fails_then_is_delivered_once_it_is_back(
    engine: Engine, smtp: SmtpServer
) -> None:
    bus = CommandBus(engine, shards=SHARDS)
    appointment_id = _book(bus, "grace@example.com", timedelta(hours=23, minutes=30))
    smtp.stop()
    s = _direct(engine, smtp)
    with structlog.testing.capture_logs() as logs:
        s.fire()
        assert s.drain(retries=False) == [(COORDINATOR, "done"), (PER_APPOINTMENT, "retry")]
        delivery = _deliveries(engine)[appointment_id]
        assert delivery.status == "failed"
        assert delivery.last_error.startswith("ConnectionRefusedError")
        smtp.start()
        assert s.drain() == [(PER_APPOINTMENT, "done")]  # the retry: the delivery
    assert len(smtp.inbox.to("grace@example.com")) == 1
    delivery = _deliveries(engine)[appointment_id]
    assert delivery.status == "sent" and delivery.attempts >= 2
    assert _sent_at(engine)[appointment_id] is not None
    assert failed_rows(engine, s.notifications.name) == []
    text = "\n".join(str(entry) for entry in logs)
    assert "grace@example.com" not in text
    assert "g***@example.com" in text


def test_a_reminder_that_cannot_be_sent_fails_at_once_and_the_others_go_out(
    engine: Engine, smtp: SmtpServer
) -> None:
    """Given appointments whose address or service was changed behind BookAppointment's back
    (it refuses both), their reminders fail after one attempt, known not sent, with the
    reason; the good one is sent."""
    bus = CommandBus(engine, shards=SHARDS)
    good = _book(bus, "heidi@example.com", timedelta(hours=23, minutes=30))
    non_ascii = _book(bus, "ivan@example.com", timedelta(hours=23, minutes=30))
    crlf = _book(bus, "judy@example.com", timedelta(hours=23, minutes=30))
    a = appointments
    with engine.begin() as conn:
        conn.execute(update(a).where(a.c.id == non_ascii).values(customer_email="иван@пример.рф"))
        conn.execute(update(a).where(a.c.id == crlf).values(service="Cut\r\nBcc: x@example.com"))
    s = _direct(engine, smtp)
    s.fire()
    sent = Counter(outcome for job, outcome in s.drain() if job == PER_APPOINTMENT)
    assert sent == {"done": 1, "failed": 2}  # one sent, two failed, none retried
    assert [rcpt for rcpt, _ in smtp.inbox.messages] == [["heidi@example.com"]]
    failed = {r.message_key: r for r in failed_rows(engine, s.notifications.name)}
    assert {k: (r.reason, r.attempts) for k, r in failed.items()} == {
        non_ascii: ("rejected", 1),
        crlf: ("rejected", 1),
    }
    assert "is not ASCII" in failed[non_ascii].exception_message
    assert "could not be built" in failed[crlf].exception_message
    deliveries = _deliveries(engine)
    assert deliveries[good].status == "sent"
    assert (deliveries[non_ascii].status, deliveries[crlf].status) == ("failed", "failed")
    assert "иван" not in failed[non_ascii].exception_message

"""send-appointment-reminders (the hourly coordinator) and send-appointment-reminder (one
appointment's e-mail).

The coordinator finds appointments starting in 23-24 hours with no reminder yet and
dispatches one job per appointment (unique per appointment for a day). The per-appointment
job runs outside its batch's transaction, because the e-mail must not go out before the
delivery is taken, nor be marked sent before it went: it (a) takes the `reminder_deliveries`
row and commits, (b) sends over SMTP, (c) marks the row sent and the appointment reminded in
one transaction. A crash between (b) and (c) leaves the row `sending`: the next attempt does
not send again (the reminder may have gone out) and fails for an operator to decide;
`outbox failed retry` sends it again. A reminder that cannot be sent at all (an address that
cannot go into an SMTP envelope, a message the email package refuses) is recorded `failed`
with the reason and fails at once: known not sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from smtplib import SMTPException
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, exists, insert, select, update

from consumers import DoNotRetry, ScheduledJobDue, job
from domain.appointments import MarkAppointmentReminderSent
from domain.events import DomainEvent, event
from domain.schema import appointments, reminder_deliveries
from jobs.config import Context
from jobs.mail import envelope_problem, mask_address, masked_error
from jobs.scheduled_scan import keyset_chunks, only_tenant

__all__ = [
    "AppointmentReminderDue",
    "ReminderNotSent",
    "reminder_message",
    "send_appointment_reminder",
    "send_appointment_reminders",
]

DUE_FROM, DUE_UNTIL = timedelta(hours=23), timedelta(hours=24)
CHUNK = 500
SENDING, SENT, FAILED = "sending", "sent", "failed"

a = appointments
d = reminder_deliveries
# A Message-ID longer than a line would be folded onto a line of its own (a leading space).
_NO_FOLDING = SMTP.clone(max_line_length=998)


@event
class AppointmentReminderDue(DomainEvent):
    TYPE = "job.appointment_reminder.due"
    appointment_id: str


class ReminderNotSent(Exception):
    """The SMTP server did not take the reminder (retried). Its message names the error with
    the recipient masked: the driver's own error text can hold the address."""


@job(
    "send-appointment-reminders",
    group="maintenance",
    on=ScheduledJobDue,
    tries=3,
    backoff=(60, 300),
    timeout_s=300,
)
def send_appointment_reminders(event: ScheduledJobDue, ctx: Context) -> None:
    """Dispatch one reminder job per appointment due (params: optional `tenant_id`)."""
    conn = ctx.connection
    taken = exists().where(d.c.appointment_id == a.c.id, d.c.status.in_((SENDING, SENT)))
    query = select(a.c.id).where(
        a.c.starts_at >= ctx.now + DUE_FROM,
        a.c.starts_at < ctx.now + DUE_UNTIL,
        a.c.reminder_sent_at.is_(None),
        ~taken,
    )
    if tenant_id := only_tenant(event):
        query = query.where(a.c.tenant_id == tenant_id)
    due = dispatched = 0
    for chunk in keyset_chunks(conn, query, a.c.id, chunk=CHUNK):
        for (appointment_id,) in chunk:
            due += 1
            message = AppointmentReminderDue(appointment_id=appointment_id)
            if ctx.dispatch("send-appointment-reminder", message, key=appointment_id):
                dispatched += 1
    ctx.log.info("appointment_reminders_dispatched", due=due, dispatched=dispatched)


@job(
    "send-appointment-reminder",
    group="notifications",
    on=AppointmentReminderDue,
    tries=5,
    backoff=(60, 300, 900, 3600),
    timeout_s=120,
    unique_key=lambda e: e.appointment_id,
    unique_for_s=24 * 3600,
    transactional=False,
)
def send_appointment_reminder(event: AppointmentReminderDue, ctx: Context) -> None:
    """Take the delivery, send the e-mail, record the outcome (see the module docstring)."""
    appointment_id = event.appointment_id
    log = ctx.log.bind(appointment_id=appointment_id)
    unsendable = None
    with ctx.transaction() as conn:
        appointment = _take(conn, ctx, appointment_id)
        if appointment is None:
            return
        message, unsendable = _message(appointment, ctx)
        if unsendable is not None:  # recorded with the take: known not sent
            _finish(conn, appointment_id, FAILED, ctx.now, unsendable)
    if unsendable is not None or message is None:
        raise DoNotRetry(
            f"the reminder for appointment {appointment_id} was not sent: {unsendable}; "
            "nothing went out"
        )
    address = appointment.customer_email
    try:
        ctx.config.mailer.send(message)
    except (SMTPException, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}".replace(address, mask_address(address))[:1000]
        with ctx.transaction() as conn:
            _finish(conn, appointment_id, FAILED, ctx.now, error)
        log.warning("appointment_reminder_not_sent", to=mask_address(address), error=error)
        raise ReminderNotSent(error) from None
    with ctx.transaction() as conn:
        _finish(conn, appointment_id, SENT, ctx.now, None)
        ctx.run_in(conn, MarkAppointmentReminderSent(appointment_id=appointment_id))
    log.info("appointment_reminder_sent", to=mask_address(address))


def _message(appointment: Any, ctx: Context) -> tuple[EmailMessage | None, str | None]:
    """(the reminder, None), or (None, why it cannot be sent: an address that cannot go into
    an envelope, a message the email package refuses); the address is never quoted."""
    address = appointment.customer_email
    if problem := envelope_problem(address):
        return None, f"its address {problem}"
    try:
        message = reminder_message(
            appointment, sender=ctx.config.mailer.from_address, zone=ctx.config.reminder_timezone
        )
    except Exception as exc:  # e.g. a line break in the service (before commands refused it)
        return None, f"its message could not be built: {masked_error(exc, address)}"
    return message, None


def _take(conn: Connection, ctx: Context, appointment_id: str) -> Any | None:
    """The appointment to remind, with its delivery taken (`sending`); None: nothing to do."""
    appointment = conn.execute(select(a).where(a.c.id == appointment_id)).one_or_none()
    if appointment is None:
        raise DoNotRetry(f"appointment {appointment_id} does not exist")
    skip = None
    if appointment.reminder_sent_at is not None:
        skip = "already_reminded"
    elif appointment.starts_at <= ctx.now:
        skip = "already_started"
    if skip:
        ctx.log.info("appointment_reminder_skipped", appointment_id=appointment_id, reason=skip)
        return None
    row = conn.execute(
        select(d.c.status, d.c.attempts, d.c.taken_at)
        .where(d.c.appointment_id == appointment_id)
        .with_for_update()
    ).one_or_none()
    if row is None:
        conn.execute(
            insert(d).values(
                appointment_id=appointment_id, status=SENDING, attempts=1, taken_at=ctx.now
            )
        )
        return appointment
    if row.status == SENT:
        # Sent, but the mark did not stick (the projection was rebuilt, say): mark it now.
        ctx.run_in(conn, MarkAppointmentReminderSent(appointment_id=appointment_id))
        return None
    if row.status == SENDING and ctx.retried_failed_id(conn) is None:
        raise DoNotRetry(
            f"the reminder for appointment {appointment_id} may already have gone out: an "
            f"attempt took it at {row.taken_at.isoformat()} and its outcome was never recorded "
            "(a crash or a lost database between sending and marking), so it is not sent "
            "again by itself; `outbox failed retry` sends it again"
        )
    taken = conn.execute(
        update(d)
        .where(d.c.appointment_id == appointment_id, d.c.status == row.status)
        .values(status=SENDING, attempts=row.attempts + 1, taken_at=ctx.now, finished_at=None)
    )
    if not taken.rowcount:
        raise RuntimeError(f"the reminder for appointment {appointment_id} was taken meanwhile")
    return appointment


def _finish(
    conn: Connection, appointment_id: str, status: str, now: datetime, error: str | None
) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": now}
    if error is not None:
        values["last_error"] = error
    conn.execute(update(d).where(d.c.appointment_id == appointment_id).values(**values))


def reminder_message(appointment: Any, *, sender: str, zone: str) -> EmailMessage:
    """The reminder e-mail; its Message-ID is built from the appointment id, so a message
    sent twice (an operator's retry) is recognisably the same one."""
    starts = appointment.starts_at.astimezone(ZoneInfo(zone))
    when = f"{starts:%a %d %b %Y, %H:%M} {starts.tzname()}"
    message = EmailMessage(policy=_NO_FOLDING)
    message["From"] = sender
    message["To"] = appointment.customer_email
    message["Subject"] = f"Reminder: {appointment.service} on {when}"
    domain = sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<appointment-reminder.{appointment.id}@{domain}>"
    message.set_content(
        f"Hello,\n\nthis is a reminder of your appointment: {appointment.service}, "
        f"{when}.\n\nSee you soon.\n"
    )
    return message

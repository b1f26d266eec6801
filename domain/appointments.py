"""Appointments: booked, and reminded once."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, Field

from domain.addresses import HeaderText, MailAddress
from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.errors import RuleViolation
from domain.events import DomainEvent, event
from domain.limits import Id
from domain.tenancy import require_tenant

__all__ = [
    "Appointment",
    "AppointmentBooked",
    "AppointmentReminderSent",
    "BookAppointment",
    "MarkAppointmentReminderSent",
]


@event
class AppointmentBooked(DomainEvent):
    TYPE = "appointment.booked"
    tenant_id: str
    customer_email: str
    service: str
    starts_at: datetime


@event
class AppointmentReminderSent(DomainEvent):
    TYPE = "appointment.reminder_sent"
    sent_at: datetime


class Appointment(Aggregate):
    TYPE = "appointment"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.reminder_sent_at: datetime | None = None

    def apply(self, event: DomainEvent) -> None:
        match event:
            case AppointmentBooked():
                self.tenant_id = event.tenant_id
            case AppointmentReminderSent():
                self.reminder_sent_at = event.sent_at

    @classmethod
    def book(
        cls,
        appointment_id: str,
        tenant_id: str,
        customer_email: str,
        service: str,
        starts_at: datetime,
    ) -> Appointment:
        appointment = cls(appointment_id)
        appointment._record(
            AppointmentBooked(
                tenant_id=tenant_id,
                customer_email=customer_email,
                service=service,
                starts_at=starts_at,
            )
        )
        return appointment

    def mark_reminder_sent(self, sent_at: datetime) -> None:
        if self.reminder_sent_at is not None:
            raise RuleViolation(
                f"appointment {self.id} was already reminded at {self.reminder_sent_at.isoformat()}"
            )
        self._record(AppointmentReminderSent(sent_at=sent_at))


class BookAppointment(Command):
    appointment_id: Id = Field(default_factory=new_id)
    tenant_id: Id
    customer_email: MailAddress  # domain.addresses: plain ASCII, as SMTP takes it
    service: HeaderText  # it goes into the reminder's Subject
    starts_at: AwareDatetime


class MarkAppointmentReminderSent(Command):
    appointment_id: Id


@handlers.register(BookAppointment)
def book_appointment(cmd: BookAppointment, uow: UnitOfWorkPort) -> str:
    require_tenant(uow, cmd.tenant_id)
    if cmd.starts_at <= uow.now:
        raise RuleViolation(f"appointment start {cmd.starts_at.isoformat()} is in the past")
    uow.add(
        Appointment.book(
            cmd.appointment_id, cmd.tenant_id, str(cmd.customer_email), cmd.service, cmd.starts_at
        )
    )
    return cmd.appointment_id


@handlers.register(MarkAppointmentReminderSent)
def mark_appointment_reminder_sent(cmd: MarkAppointmentReminderSent, uow: UnitOfWorkPort) -> str:
    uow.get(Appointment, cmd.appointment_id).mark_reminder_sent(uow.now)
    return cmd.appointment_id

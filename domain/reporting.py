"""Sales exports (CSV, XLSX) and PDF sales reports: requested, then ready or failed, then
expired.

One aggregate, `SalesExport`, whatever its kind: a report is an export of kind `pdf`. They
share the life that matters to an operator (requested -> ready | failed, ready -> expired)
and the one `sales_exports` table `outbox exports list` reads. They differ in the request
event, so that each job takes only its own kind: `sales_export.requested` (csv, xlsx) goes
to generate-sales-export, `sales_export.report_requested` (pdf) to generate-pdf-report.

A period is whole UTC days, `period_from` to `period_to` inclusive, at most
MAX_PERIOD_DAYS long, never starting after the day the command runs. The file itself is
written by a job (jobs/exports.py, reports.py), which records the outcome with
MarkSalesExportReady or MarkSalesExportFailed; the prune job expires it with its URL.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from domain.aggregate import Aggregate
from domain.commands import Command, UnitOfWorkPort, handlers, new_id
from domain.errors import InvalidCommand, RuleViolation
from domain.events import DomainEvent, event
from domain.limits import Id
from domain.tenancy import require_tenant

__all__ = [
    "EARLIEST_DAY",
    "MAX_PERIOD_DAYS",
    "ExpireSalesExport",
    "ExportKind",
    "ExportStatus",
    "MarkSalesExportFailed",
    "MarkSalesExportReady",
    "RequestSalesExport",
    "RequestSalesReport",
    "SalesExport",
    "SalesExportExpired",
    "SalesExportFailed",
    "SalesExportReady",
    "SalesExportRequested",
    "SalesReportRequested",
    "period_problem",
]

# A year and a day: a longer period is a typo, or a job for the data warehouse.
MAX_PERIOD_DAYS = 366
# Nothing was sold before the system existed; an earlier day is a typo.
EARLIEST_DAY = date(2000, 1, 1)
MAX_REASON = 1000


class ExportKind(StrEnum):
    CSV = "csv"
    XLSX = "xlsx"
    PDF = "pdf"


class ExportStatus(StrEnum):
    REQUESTED = "requested"
    READY = "ready"
    FAILED = "failed"
    EXPIRED = "expired"


@event
class SalesExportRequested(DomainEvent):
    TYPE = "sales_export.requested"
    tenant_id: str
    kind: Literal["csv", "xlsx"]
    period_from: date
    period_to: date


@event
class SalesReportRequested(DomainEvent):
    TYPE = "sales_export.report_requested"
    tenant_id: str
    period_from: date
    period_to: date


@event
class SalesExportReady(DomainEvent):
    TYPE = "sales_export.ready"
    # Relative to EXPORTS_DIR, always under the tenant's folder.
    path: str
    url: str
    expires_at: datetime
    rows: int
    bytes: int
    sha256: str


@event
class SalesExportFailed(DomainEvent):
    TYPE = "sales_export.failed"
    reason: str


@event
class SalesExportExpired(DomainEvent):
    TYPE = "sales_export.expired"
    # Whether the prune job found the file to delete (False: it was gone already).
    file_removed: bool


class SalesExport(Aggregate):
    TYPE = "sales_export"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status = ""
        self.kind = ""

    def apply(self, event: DomainEvent) -> None:
        match event:
            case SalesExportRequested():
                self.tenant_id, self.kind = event.tenant_id, event.kind
                self.status = ExportStatus.REQUESTED
            case SalesReportRequested():
                self.tenant_id, self.kind = event.tenant_id, ExportKind.PDF
                self.status = ExportStatus.REQUESTED
            case SalesExportReady():
                self.status = ExportStatus.READY
            case SalesExportFailed():
                self.status = ExportStatus.FAILED
            case SalesExportExpired():
                self.status = ExportStatus.EXPIRED

    @classmethod
    def request(
        cls, export_id: str, tenant_id: str, kind: ExportKind, period_from: date, period_to: date
    ) -> SalesExport:
        export = cls(export_id)
        if kind == ExportKind.PDF:
            export._record(
                SalesReportRequested(
                    tenant_id=tenant_id, period_from=period_from, period_to=period_to
                )
            )
        else:
            export._record(
                SalesExportRequested(
                    tenant_id=tenant_id,
                    kind=kind.value,
                    period_from=period_from,
                    period_to=period_to,
                )
            )
        return export

    def _require(self, status: ExportStatus, action: str) -> None:
        if self.status != status:
            raise RuleViolation(
                f"sales export {self.id} is {self.status or 'unknown'}; only {status} "
                f"exports can be {action}"
            )

    def ready(self, ready: SalesExportReady) -> None:
        self._require(ExportStatus.REQUESTED, "marked ready")
        self._record(ready)

    def fail(self, reason: str) -> None:
        self._require(ExportStatus.REQUESTED, "marked failed")
        self._record(SalesExportFailed(reason=reason[:MAX_REASON]))

    def expire(self, file_removed: bool) -> None:
        self._require(ExportStatus.READY, "expired")
        self._record(SalesExportExpired(file_removed=file_removed))


def period_problem(period_from: date, period_to: date) -> str | None:
    """Why a period is refused (the command's limits), or None. The jobs check the stored
    period again: a row is the truth, and the limits must hold for whatever wrote it."""
    if period_from > period_to:
        return (
            f"the period starts ({period_from}) after it ends ({period_to}); "
            "give --from before --to"
        )
    if period_from < EARLIEST_DAY:
        return f"the period starts before {EARLIEST_DAY}: no sales then"
    days = (period_to - period_from).days + 1
    if days > MAX_PERIOD_DAYS:
        return f"the period is {days} days; at most {MAX_PERIOD_DAYS}: request several"
    return None


class _PeriodCommand(Command):
    tenant_id: Id
    period_from: date
    period_to: date

    @model_validator(mode="after")
    def _bounded_period(self) -> _PeriodCommand:
        problem = period_problem(self.period_from, self.period_to)
        if problem is not None:
            raise ValueError(problem)
        return self


class RequestSalesExport(_PeriodCommand):
    export_id: Id = Field(default_factory=new_id)
    format: Literal["csv", "xlsx"]


class RequestSalesReport(_PeriodCommand):
    export_id: Id = Field(default_factory=new_id)


class MarkSalesExportReady(Command):
    export_id: Id
    path: str = Field(min_length=1, max_length=500)
    url: str = Field(min_length=1, max_length=2000)
    expires_at: datetime
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class MarkSalesExportFailed(Command):
    export_id: Id
    reason: str = Field(min_length=1, max_length=MAX_REASON)


class ExpireSalesExport(Command):
    export_id: Id
    file_removed: bool


def _request(uow: UnitOfWorkPort, cmd: _PeriodCommand, export_id: str, kind: ExportKind) -> str:
    require_tenant(uow, cmd.tenant_id)
    today = uow.now.date()
    if cmd.period_from > today:
        raise InvalidCommand(
            f"the period starts on {cmd.period_from}, after today ({today}): nothing sold yet"
        )
    uow.add(SalesExport.request(export_id, cmd.tenant_id, kind, cmd.period_from, cmd.period_to))
    return export_id


@handlers.register(RequestSalesExport)
def request_sales_export(cmd: RequestSalesExport, uow: UnitOfWorkPort) -> str:
    return _request(uow, cmd, cmd.export_id, ExportKind(cmd.format))


@handlers.register(RequestSalesReport)
def request_sales_report(cmd: RequestSalesReport, uow: UnitOfWorkPort) -> str:
    return _request(uow, cmd, cmd.export_id, ExportKind.PDF)


@handlers.register(MarkSalesExportReady)
def mark_sales_export_ready(cmd: MarkSalesExportReady, uow: UnitOfWorkPort) -> str:
    export = uow.get(SalesExport, cmd.export_id)
    export.ready(SalesExportReady(**cmd.model_dump(exclude={"export_id"})))
    return cmd.export_id


@handlers.register(MarkSalesExportFailed)
def mark_sales_export_failed(cmd: MarkSalesExportFailed, uow: UnitOfWorkPort) -> str:
    uow.get(SalesExport, cmd.export_id).fail(cmd.reason)
    return cmd.export_id


@handlers.register(ExpireSalesExport)
def expire_sales_export(cmd: ExpireSalesExport, uow: UnitOfWorkPort) -> str:
    uow.get(SalesExport, cmd.export_id).expire(cmd.file_removed)
    return cmd.export_id

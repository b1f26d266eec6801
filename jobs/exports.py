"""generate-sales-export: a tenant's orders of a period as a CSV or XLSX file under
EXPORTS_DIR/<tenant>/, downloadable through a signed URL that expires after EXPORT_URL_TTL.

The job runs outside its batch's transaction (`transactional=False`): it reads up to
millions of rows and writes a file, and must not hold the batch open meanwhile. It is
idempotent by itself:

1. the export's row says what is left to do: `requested` -> write; anything else (ready,
   failed, expired) -> nothing, so a redelivery after success does nothing;
2. the file's name is fixed by the export (tenant, period, id), written under a temporary
   name and renamed over it, so a retry after a crash rewrites the same file;
3. MarkSalesExportReady is accepted once: a second attempt that lost the race to a first
   one is refused by the aggregate (`only requested exports can be marked ready`) and
   ends quietly.

The record only says which export to work on (its key, the export's id). Tenant, kind and
period come from the export's row, which the command validated; a record whose own claims
differ from the row (another tenant, a reversed or unbounded period, another format) is
forged or corrupt: it fails at once with reason `record_mismatch` (consumers.trust), writes
no file and leaves the export as it was (ADR 014).

What can never succeed (unreadable stored data, a tenant id no URL can carry, downloads
not configured, a stored period outside the command's limits) marks the export failed at
once, with the reason `outbox exports list` shows; other errors are retried, and the last
attempt marks it failed too.

`expire_exports` is the prune job's part: ready exports whose URL has expired lose their
file and become `expired`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Connection, select

from consumers import DoNotRetry, job, require_match
from domain.errors import RuleViolation
from domain.reporting import (
    ExpireSalesExport,
    ExportStatus,
    MarkSalesExportFailed,
    MarkSalesExportReady,
    SalesExportRequested,
    SalesReportRequested,
    period_problem,
)
from domain.schema import sales_exports
from jobs.config import OwnContext
from jobs.export_files import WrittenFile, write_csv, write_xlsx
from jobs.sales_rows import COLUMNS, SalesDataError, sales_rows

__all__ = [
    "EXPORT_TRIES",
    "ExportTarget",
    "claims",
    "deliver",
    "expire_exports",
    "export_path",
    "generate_sales_export",
]

EXPORT_TRIES = 3
e = sales_exports
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
Writer = Callable[[Connection, Path, "ExportTarget"], WrittenFile]


def export_path(tenant_id: str, export_id: str, period: tuple[date, date], ext: str) -> str:
    """The file's path relative to EXPORTS_DIR: the tenant's folder, then a name that is the
    same for every attempt. An id that is not a plain file name is hashed into one."""
    name = export_id
    if not _SAFE_NAME.match(export_id):
        name = hashlib.sha256(export_id.encode()).hexdigest()[:32]
    return f"{tenant_id}/sales-{period[0]}_{period[1]}-{name}.{ext}"


class ExportTarget:
    """One export's row, read at the start of an attempt."""

    def __init__(self, row: Any) -> None:
        self.id: str = row.id
        self.tenant_id: str = row.tenant_id
        self.kind: str = row.kind
        self.status: str = row.status
        self.period = (date.fromisoformat(row.period_from), date.fromisoformat(row.period_to))

    def truth(self) -> dict[str, Any]:
        """What a record may claim about this export, as the database holds it."""
        return {
            "tenant_id": self.tenant_id,
            "kind": self.kind,
            "period_from": self.period[0],
            "period_to": self.period[1],
        }

    @property
    def path(self) -> str:
        return export_path(self.tenant_id, self.id, self.period, self.kind)


@job(
    "generate-sales-export",
    group="exports",
    on=SalesExportRequested,
    tries=EXPORT_TRIES,
    backoff=(30, 300),
    timeout_s=1800,
    transactional=False,
)
def generate_sales_export(event: SalesExportRequested, ctx: OwnContext) -> None:
    """Write the CSV or XLSX file and record SalesExportReady with its signed URL."""

    def rows(conn: Connection, target: Path, export: ExportTarget) -> WrittenFile:
        # Tenant, period and format from the export's row, never from the record.
        write = write_xlsx if export.kind == "xlsx" else write_csv
        chunks = sales_rows(conn, export.tenant_id, *export.period)
        return write(target, COLUMNS, chunks)

    deliver(ctx, rows, claims(event, event.kind))


def claims(event: SalesExportRequested | SalesReportRequested, kind: str) -> dict[str, Any]:
    """What a request record says about its export (compared with the export's row)."""
    return {
        "tenant_id": event.tenant_id,
        "kind": kind,
        "period_from": event.period_from,
        "period_to": event.period_to,
    }


def deliver(ctx: OwnContext, write: Writer, claims: dict[str, Any]) -> None:
    """The steps every export kind shares (see the module docstring): check, write, sign,
    record. `write` gets a connection to read from, the file to write and the export's row;
    `claims` are what the record says about the export (compared with its row)."""
    export_id = ctx.key  # a domain event's Kafka key is its aggregate's id
    log = ctx.log.bind(export_id=export_id)
    with ctx.transaction() as conn:
        row = conn.execute(select(e).where(e.c.id == export_id)).one_or_none()
    if row is None:
        raise DoNotRetry(f"sales export {export_id[:64]!r} does not exist")
    target = ExportTarget(row)
    # Before the status: a forged record ends in failed jobs even for a finished export.
    require_match(f"sales export {target.id}", claims, target.truth())
    if target.status != ExportStatus.REQUESTED:
        log.info("sales_export_skipped", status=target.status)
        return
    problem = period_problem(*target.period)
    if problem is not None:
        _fail(ctx, target, f"the stored period is refused: {problem}")
        return
    signer = ctx.config.signer
    if signer is None:
        _fail(ctx, target, "downloads are not configured: set DOWNLOAD_SIGNING_KEYS")
        return
    try:
        # Signed before the file is written: a tenant id no URL can carry fails at once.
        signer.sign(target.path, target.tenant_id, ttl_s=ctx.config.export_url_ttl_s)
        with _reading(ctx) as conn:
            written = write(conn, ctx.config.exports_dir / target.path, target)
        url = signer.sign(target.path, target.tenant_id, ttl_s=ctx.config.export_url_ttl_s)
    except (SalesDataError, ValueError) as exc:
        _fail(ctx, target, str(exc))
        return
    except Exception as exc:
        if ctx.attempt >= EXPORT_TRIES:
            _fail(ctx, target, f"{type(exc).__name__}: {str(exc)[:500]} (attempt {ctx.attempt})")
        raise
    ready = MarkSalesExportReady(
        export_id=target.id,
        path=target.path,
        url=url,
        expires_at=_expiry(url),
        rows=written.rows,
        bytes=written.bytes,
        sha256=written.sha256,
    )
    try:
        ctx.run(ready)
    except RuleViolation:
        log.info("sales_export_already_recorded")
        return
    # Never the URL: its signature is a bearer token until it expires.
    log.info("sales_export_ready", kind=target.kind, rows=written.rows, bytes=written.bytes)


def _reading(ctx: OwnContext) -> Any:
    """A read transaction that sees one snapshot throughout (PostgreSQL's default, READ
    COMMITTED, would let a long export see orders committed halfway through)."""
    engine = ctx.engine
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    return engine.begin()


def _expiry(url: str) -> datetime:
    expires = parse_qs(urlsplit(url).query)["expires"][0]
    return datetime.fromtimestamp(int(expires), tz=UTC)


def _fail(ctx: OwnContext, target: ExportTarget, reason: str) -> None:
    ctx.log.warning("sales_export_failed", export_id=target.id, reason=reason[:300])
    try:
        ctx.run(MarkSalesExportFailed(export_id=target.id, reason=reason[:1000]))
    except RuleViolation:
        ctx.log.info("sales_export_already_recorded", export_id=target.id)


def expire_exports(ctx: OwnContext, *, chunk: int = 500) -> dict[str, int]:
    """Remove the files of ready exports whose URL has expired and mark them expired."""
    expired = removed = 0
    root = ctx.config.exports_dir.resolve()
    while True:
        with ctx.transaction() as conn:
            due = conn.execute(
                select(e.c.id, e.c.path)
                .where(e.c.status == ExportStatus.READY, e.c.url_expires_at <= ctx.now)
                .order_by(e.c.id)
                .limit(chunk)
            ).all()
        for export_id, path in due:
            file = (root / path).resolve() if path else root
            gone = False
            # Only a file under EXPORTS_DIR is ever deleted, whatever the row says.
            if file != root and file.is_relative_to(root) and file.is_file():
                file.unlink()
                gone = True
            try:
                ctx.run(ExpireSalesExport(export_id=export_id, file_removed=gone))
            except RuleViolation:
                continue  # expired meanwhile by another prune
            expired += 1
            removed += gone
        if len(due) < chunk:
            break
    if expired:
        ctx.log.info("sales_exports_expired", expired=expired, files_removed=removed)
    return {"exports_expired": expired, "export_files_removed": removed}

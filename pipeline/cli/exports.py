"""`outbox exports request|list` and `outbox reports request`: sales exports (CSV, XLSX) and
PDF sales reports, as the dashboard's export action will ask for them.

A request sends the RequestSalesExport (or RequestSalesReport) command and prints the new
export's id; the exports group's jobs write the file and record its signed URL, which
`exports list` shows once the export is ready. `exports request --format pdf` is the same
as `reports request`: a report is an export of kind pdf (domain/reporting.py).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import click
from rich.table import Table
from sqlalchemy import select

from domain.commands import Command
from pipeline.cli.clikit import (
    EXIT_CODES_HELP,
    TextType,
    cell,
    dump_json,
    engine_for,
    guarded,
    json_option,
    out,
    settings,
)

__all__ = ["exports", "reports"]

TENANT = TextType(64)
_DAY = click.DateTime(formats=["%Y-%m-%d"])
_STATUSES = ("requested", "ready", "failed", "expired")

tenant_option = click.option("--tenant", "tenant_id", required=True, type=TENANT, help="Tenant id.")
from_option = click.option(
    "--from", "period_from", required=True, type=_DAY, help="First day, YYYY-MM-DD (UTC)."
)
to_option = click.option(
    "--to", "period_to", required=True, type=_DAY, help="Last day, YYYY-MM-DD, inclusive."
)


@click.group("exports", epilog=EXIT_CODES_HELP)
def exports() -> None:
    """Sales exports (CSV, XLSX) and PDF reports behind signed, expiring URLs."""


@click.group("reports", epilog=EXIT_CODES_HELP)
def reports() -> None:
    """PDF sales reports (listed by `outbox exports list`)."""


def _send(command: Command, as_json: bool) -> None:
    from pipeline.wiring import build_bus

    loaded = settings()
    result = build_bus(loaded, engine_for(loaded)).dispatch(command)
    if as_json:
        dump_json({"id": result.aggregate_id, "status": "requested"})
        return
    out.print(result.aggregate_id, highlight=False)


def _period(period_from: datetime, period_to: datetime) -> dict[str, date]:
    return {"period_from": period_from.date(), "period_to": period_to.date()}


@exports.command("request")
@tenant_option
@click.option(
    "--format", "fmt", required=True, type=click.Choice(["csv", "xlsx", "pdf"]), help="File kind."
)
@from_option
@to_option
@json_option
@guarded
def exports_request(
    tenant_id: str, fmt: str, period_from: datetime, period_to: datetime, as_json: bool
) -> None:
    """Request a sales export of the tenant's orders placed from --from to --to; prints its
    id (`exports list` shows its URL when ready)."""
    from domain.reporting import RequestSalesExport, RequestSalesReport

    data: dict[str, Any] = {"tenant_id": tenant_id, **_period(period_from, period_to)}
    if fmt == "pdf":
        _send(RequestSalesReport.parse(data), as_json)
    else:
        _send(RequestSalesExport.parse({**data, "format": fmt}), as_json)


@reports.command("request")
@tenant_option
@from_option
@to_option
@json_option
@guarded
def reports_request(
    tenant_id: str, period_from: datetime, period_to: datetime, as_json: bool
) -> None:
    """Request a PDF sales report of the tenant for the period; prints its id."""
    from domain.reporting import RequestSalesReport

    data = {"tenant_id": tenant_id, **_period(period_from, period_to)}
    _send(RequestSalesReport.parse(data), as_json)


@exports.command("list")
@click.option("--tenant", "tenant_id", type=TENANT, help="Only this tenant's exports.")
@click.option("--status", type=click.Choice(_STATUSES), help="Only exports in this state.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
@guarded
def exports_list(tenant_id: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Exports and reports, newest first, with the signed URL of those ready."""
    from domain.schema import sales_exports as e

    query = select(e).order_by(e.c.requested_at.desc(), e.c.id).limit(limit)
    if tenant_id:
        query = query.where(e.c.tenant_id == tenant_id)
    if status:
        query = query.where(e.c.status == status)
    with engine_for(settings()).connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for row in rows:
        if row["status"] != "ready":
            row["url"] = None  # an expired or failed export's URL serves nothing
    if as_json:
        dump_json(rows, lines=True)
        return
    table = Table(title="sales exports")
    for name in ("id", "tenant", "kind", "period", "status", "rows", "bytes", "requested", "url"):
        table.add_column(name, overflow="fold")
    for row in rows:
        detail = row["url"] if row["status"] == "ready" else row["error"]
        table.add_row(
            cell(row["id"]),
            cell(row["tenant_id"]),
            row["kind"],
            f"{row['period_from']}..{row['period_to']}",
            row["status"],
            "" if row["row_count"] is None else f"{row['row_count']:,}",
            "" if row["byte_count"] is None else f"{row['byte_count']:,}",
            row["requested_at"].isoformat(timespec="seconds"),
            cell(detail),
        )
    out.print(table)

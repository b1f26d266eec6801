"""generate-sales-export against real databases: the file equals the database, hostile text
is neutralised, a retry does not duplicate, and every failure path ends in a clear reason."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from consumers import GROUPS, OwnTransactionsContext, jobs
from consumers.dispatch import Dispatcher
from domain import CommandBus
from domain.reporting import ExportStatus, RequestSalesExport
from domain.schema import domain_events, orders
from domain.schema import sales_exports as e
from jobs import export_files, sales_rows
from jobs.exports import expire_exports
from outbox.types import utcnow
from tests.export_helpers import (
    DAY0,
    expected_rows,
    export_row,
    job_config,
    load_orders,
    read_csv,
    read_xlsx,
    run_job,
)
from tests.scenario import ensure_tenant

JOB = "generate-sales-export"
LAST = DAY0 + timedelta(days=9)


def _request(bus: CommandBus, fmt: str, tenant: str = "t-1", **period: Any) -> tuple[str, Any]:
    ensure_tenant(bus, tenant)
    days = {"period_from": DAY0, "period_to": LAST, **period}
    result = bus.dispatch(RequestSalesExport(tenant_id=tenant, format=fmt, **days))
    return result.aggregate_id, result.events[0].event


def _export(engine: Engine, bus: CommandBus, tmp_path: Path, fmt: str, **kw: Any) -> Any:
    export_id, requested = _request(bus, fmt, **kw)
    run_job(engine, bus, JOB, requested, export_id, job_config(tmp_path))
    return export_row(engine, export_id)


def _ready_events(engine: Engine, export_id: str) -> int:
    d = domain_events
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(d)
                .where(d.c.aggregate_id == export_id, d.c.type == "sales_export.ready")
            ).scalar_one()
        )


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_an_export_equals_the_database_across_chunks(
    engine: Engine, bus: CommandBus, tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given 400 orders over 10 days and 7-order chunks, When a period of days 2-6 is
    exported, Then the file holds exactly the period's order lines, oldest first."""
    monkeypatch.setattr(sales_rows, "CHUNK", 7)
    load_orders(engine, "t-1", 400)
    load_orders(engine, "t-2", 50, seed=2)  # another tenant's orders stay out
    first, last = DAY0 + timedelta(days=2), DAY0 + timedelta(days=6)
    row = _export(engine, bus, tmp_path, fmt, period_from=first, period_to=last)
    assert row.status == ExportStatus.READY, row.error
    want = expected_rows(engine, "t-1", first, last)
    path = tmp_path / row.path
    if fmt == "csv":
        header, got = read_csv(path)
    else:
        ((header, *got),) = read_xlsx(path).values()
    assert header == list(sales_rows.COLUMNS)
    assert got == want
    assert row.row_count == len(want) > 100
    assert row.byte_count == path.stat().st_size
    assert row.path.startswith("t-1/") and row.url.startswith("/downloads/t-1/")
    assert not list(tmp_path.rglob("*.part"))


def test_a_retried_export_rewrites_the_same_file_and_is_recorded_ready_once(
    engine: Engine, bus: CommandBus, tmp_path: Path
) -> None:
    load_orders(engine, "t-1", 30)
    export_id, requested = _request(bus, "csv")
    config = job_config(tmp_path)
    run_job(engine, bus, JOB, requested, export_id, config)
    first = export_row(engine, export_id)
    # A redelivery (the offset commit was lost), and an operator's retry.
    run_job(engine, bus, JOB, requested, export_id, config)
    run_job(engine, bus, JOB, requested, export_id, config, attempt=2)
    assert _ready_events(engine, export_id) == 1
    assert export_row(engine, export_id).sha256 == first.sha256
    assert [p.name for p in (tmp_path / "t-1").iterdir()] == [Path(first.path).name]


def test_a_crash_after_the_file_was_written_rewrites_it_and_records_ready(
    engine: Engine, bus: CommandBus, tmp_path: Path
) -> None:
    """Given an attempt that wrote the file but died before recording it, When the job runs
    again, Then it writes the same file again (same digest) and records ready once."""
    load_orders(engine, "t-1", 30)
    export_id, requested = _request(bus, "xlsx")
    config = job_config(tmp_path)
    run_job(engine, bus, JOB, requested, export_id, config)
    ready = export_row(engine, export_id)
    stale = (tmp_path / ready.path).read_bytes()
    with engine.begin() as conn:  # as if the ready mark never committed
        conn.execute(
            domain_events.delete().where(
                domain_events.c.aggregate_id == export_id, domain_events.c.version == 2
            )
        )
        conn.execute(update(e).where(e.c.id == export_id).values(status="requested", version=1))
    (tmp_path / ready.path).write_bytes(b"half a file")
    run_job(engine, bus, JOB, requested, export_id, config)
    again = export_row(engine, export_id)
    assert again.status == ExportStatus.READY
    assert _ready_events(engine, export_id) == 1
    assert len((tmp_path / again.path).read_bytes()) == len(stale)
    assert read_xlsx(tmp_path / again.path) == read_xlsx(tmp_path / ready.path)


HOSTILE = [
    '=HYPERLINK("http://evil.example","x")',
    "+1+2",
    "-2+3",
    "@SUM(A1:A2)",
    "\tTab",
    "\x00=NUL then formula",
    "plain\x00with\x07controls",
    "x" * 40_000,
]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_hostile_cells_are_neutralised(
    engine: Engine, bus: CommandBus, tmp_path: Path, fmt: str
) -> None:
    """Product names with formulas and control characters (as long as the column holds): no
    cell of the file starts a formula or holds a control character."""
    # PostgreSQL text cannot hold NUL at all: there another control character stands in.
    nul = "\x01" if engine.dialect.name == "postgresql" else "\x00"
    hostile = [h.replace("\x00", nul)[:200] for h in HOSTILE]
    load_orders(engine, "t-1", 60, products_count=len(hostile), names=lambda n: hostile[n])
    row = _export(engine, bus, tmp_path, fmt)
    assert row.status == ExportStatus.READY, row.error
    path = tmp_path / row.path
    cells_rows = read_csv(path)[1] if fmt == "csv" else read_xlsx(path)["orders"][1:]
    names = {r[6] for r in cells_rows}
    assert names <= {sales_rows.cell_text(h) for h in hostile}
    assert '\'=HYPERLINK("http://evil.example","x")' in names
    assert "'=NUL then formula" in names and "plainwithcontrols" in names
    for cells in cells_rows:
        for value in cells[3:7]:
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
            assert not any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value), value


def test_a_huge_cell_is_cut_to_what_a_spreadsheet_holds() -> None:
    assert len(sales_rows.cell_text("=" + "x" * 100_000)) == sales_rows.MAX_CELL_CHARS
    assert sales_rows.cell_text("=" + "x" * 100_000).startswith("'=")


def test_a_long_xlsx_export_continues_on_a_second_sheet(
    engine: Engine, bus: CommandBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_files, "SHEET_ROWS", 25)
    load_orders(engine, "t-1", 30)
    row = _export(engine, bus, tmp_path, "xlsx")
    sheets = read_xlsx(tmp_path / row.path)
    assert list(sheets)[:2] == ["orders", "orders 2"]
    body = [r for rows in sheets.values() for r in rows[1:]]
    assert all(rows[0] == list(sales_rows.COLUMNS) for rows in sheets.values())
    assert body == expected_rows(engine, "t-1", DAY0, LAST)
    assert all(len(rows) == 26 for rows in list(sheets.values())[:-1])


def test_unreadable_stored_lines_fail_the_export_naming_the_order(
    engine: Engine, bus: CommandBus, tmp_path: Path
) -> None:
    load_orders(engine, "t-1", 5)
    with engine.begin() as conn:
        conn.execute(update(orders).where(orders.c.id == "t-1-o0000003").values(lines="{not json"))
    row = _export(engine, bus, tmp_path, "csv")
    assert row.status == ExportStatus.FAILED
    assert "order 't-1-o0000003' has unreadable lines" in row.error
    assert (
        row.url is None and not list(tmp_path.rglob("*.csv")) and not list(tmp_path.rglob("*.part"))
    )


def test_without_signing_keys_the_export_fails_saying_what_to_set(
    engine: Engine, bus: CommandBus, tmp_path: Path
) -> None:
    export_id, requested = _request(bus, "csv")
    run_job(engine, bus, JOB, requested, export_id, job_config(tmp_path, url_signer=None))
    row = export_row(engine, export_id)
    assert row.status == ExportStatus.FAILED and "DOWNLOAD_SIGNING_KEYS" in row.error


def test_a_tenant_id_no_url_can_carry_fails_the_export_at_once(
    engine: Engine, bus: CommandBus, tmp_path: Path
) -> None:
    export_id, requested = _request(bus, "csv", tenant="acme corp")
    run_job(engine, bus, JOB, requested, export_id, job_config(tmp_path))
    row = export_row(engine, export_id)
    assert row.status == ExportStatus.FAILED
    assert "is not a file of tenant 'acme corp'" in row.error
    assert not list(tmp_path.rglob("*.csv"))


def test_a_write_error_is_retried_and_the_last_attempt_marks_the_export_failed(
    engine: Engine, bus: CommandBus, tmp_path: Path
) -> None:
    load_orders(engine, "t-1", 5)
    blocked = tmp_path / "exports"
    blocked.write_text("a file where the folder should be")
    export_id, requested = _request(bus, "csv")
    config = job_config(blocked)
    with pytest.raises(OSError, match="exports"):
        run_job(engine, bus, JOB, requested, export_id, config, attempt=1)
    assert export_row(engine, export_id).status == ExportStatus.REQUESTED
    with pytest.raises(OSError, match="exports"):
        run_job(engine, bus, JOB, requested, export_id, config, attempt=3)
    row = export_row(engine, export_id)
    assert row.status == ExportStatus.FAILED and "(attempt 3)" in row.error


def test_an_expired_export_loses_its_file_and_is_marked_expired_once(
    engine: Engine, bus: CommandBus, tmp_path: Path
) -> None:
    load_orders(engine, "t-1", 5)
    kept = _export(engine, bus, tmp_path, "csv")
    gone = _export(engine, bus, tmp_path, "xlsx")
    with engine.begin() as conn:
        conn.execute(
            update(e).where(e.c.id == kept.id).values(url_expires_at=utcnow() + timedelta(days=9))
        )
    config = job_config(tmp_path)

    def prune_at(now: Any) -> dict[str, int]:
        ctx = OwnTransactionsContext(
            engine,
            group="maintenance",
            job="prune-outbox",
            event_id="e",
            message_id="m",
            key="prune-outbox",
            attempt=1,
            headers={},
            now=now,
            bus=bus,
            dispatcher=Dispatcher(list(GROUPS.values()), jobs, shards=8),
            config=config,
        )
        return expire_exports(ctx, chunk=1)

    later = utcnow() + timedelta(hours=2)  # past the 1 h URL, before the 9 days
    assert prune_at(later) == {"exports_expired": 1, "export_files_removed": 1}
    assert prune_at(later) == {"exports_expired": 0, "export_files_removed": 0}
    assert export_row(engine, gone.id).status == ExportStatus.EXPIRED
    assert not (tmp_path / gone.path).exists()
    assert export_row(engine, kept.id).status == ExportStatus.READY
    assert (tmp_path / kept.path).is_file()

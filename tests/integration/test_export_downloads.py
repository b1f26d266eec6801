"""A 100,000-order export on PostgreSQL equals the database, and its signed URL, served by
the real web app, works, expires (410) and refuses tampering and other tenants (403)."""

from __future__ import annotations

import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from starlette.testclient import TestClient

from domain import CommandBus
from domain.reporting import ExportStatus, RequestSalesExport
from jobs import sales_rows
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
    signer,
)
from tests.scenario import ensure_tenant
from web import WebConfig, create_app

LAST = DAY0 + timedelta(days=9)


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def _export(engine: Engine, bus: CommandBus, exports: Path, fmt: str, tenant: str = "t-1") -> str:
    ensure_tenant(bus, tenant)
    result = bus.dispatch(
        RequestSalesExport(tenant_id=tenant, format=fmt, period_from=DAY0, period_to=LAST)
    )
    run_job(
        engine,
        bus,
        "generate-sales-export",
        result.events[0].event,
        result.aggregate_id,
        job_config(exports),
    )
    return result.aggregate_id


def _client(exports: Path, clock: Clock, bus: CommandBus) -> TestClient:
    app = create_app(
        WebConfig(
            bus=bus, gateways={}, ready=lambda: None, downloads=signer(exports, clock), clock=clock
        )
    )
    return TestClient(app)


@pytest.fixture
def orders_100k(postgres_db: Engine) -> tuple[Engine, CommandBus, list[list[str]]]:
    """100,000 orders of 1-3 lines (about 160,000 rows) on PostgreSQL, and what the export of
    them must hold, computed from the database independently."""
    load_orders(postgres_db, "t-1", 100_000, products_count=500)
    want = expected_rows(postgres_db, "t-1", DAY0, LAST)
    assert len(want) > 100_000
    return postgres_db, CommandBus(postgres_db, shards=8), want


@pytest.mark.slow
def test_csv_and_xlsx_exports_of_100k_orders_equal_the_database(
    orders_100k: tuple[Engine, CommandBus, list[list[str]]], tmp_path: Path
) -> None:
    """The CSV parsed back, and the XLSX read back with openpyxl (read-only), equal the
    database row for row; the CSV's download through its signed URL is the file byte for
    byte. (One test: loading 100,000 orders once costs 14 s.)"""
    engine, bus, want = orders_100k
    row = export_row(engine, _export(engine, bus, tmp_path, "csv"))
    assert row.status == ExportStatus.READY and row.row_count == len(want)
    header, rows = read_csv(tmp_path / row.path)
    assert header == list(sales_rows.COLUMNS) and rows == want
    with _client(tmp_path, Clock(), bus) as client:
        answer = client.get(row.url)
    assert answer.status_code == 200
    assert answer.content == (tmp_path / row.path).read_bytes()
    assert answer.headers["cache-control"] == "private, no-store"

    row = export_row(engine, _export(engine, bus, tmp_path, "xlsx"))
    assert row.status == ExportStatus.READY and row.row_count == len(want)
    (sheet,) = read_xlsx(tmp_path / row.path).values()
    assert sheet[0] == list(sales_rows.COLUMNS) and sheet[1:] == want


@pytest.fixture
def served(engine: Engine, tmp_path: Path) -> Iterator[tuple[TestClient, Clock, str, str]]:
    """A small ready CSV export of t-1 (and one of t-2), and the app serving EXPORTS_DIR."""
    bus = CommandBus(engine, shards=8)
    load_orders(engine, "t-1", 20)
    load_orders(engine, "t-2", 5, seed=3)
    url = export_row(engine, _export(engine, bus, tmp_path, "csv")).url
    other = export_row(engine, _export(engine, bus, tmp_path, "csv", tenant="t-2")).url
    clock = Clock()
    # The URL's own signing time, not the fixture's: exporting can take seconds here.
    expires = int(dict(parse_qsl(urlsplit(url).query))["expires"])
    clock.now = datetime.fromtimestamp(expires - 3600, tz=UTC)
    with _client(tmp_path, clock, bus) as client:
        yield client, clock, url, other


def test_the_signed_url_works_then_expires(served: tuple[TestClient, Clock, str, str]) -> None:
    client, clock, url, _ = served
    assert client.get(url).status_code == 200
    clock.now += timedelta(seconds=3599)
    assert client.get(url).status_code == 200
    clock.now += timedelta(seconds=2)  # EXPORT_URL_TTL of the test config: one hour
    answer = client.get(url)
    assert answer.status_code == 410 and "expired" in answer.text


def test_another_tenant_cannot_use_or_rewrite_a_url(
    served: tuple[TestClient, Clock, str, str],
) -> None:
    client, _, url, other = served
    assert client.get(other).status_code == 200
    # t-2's signature on t-1's file, t-1's file claimed by t-2, t-2's path with t-1's query.
    query = dict(parse_qsl(urlsplit(url).query))
    other_query = dict(parse_qsl(urlsplit(other).query))
    forged = [
        f"{urlsplit(url).path}?{urlencode({**query, 'sig': other_query['sig']})}",
        f"{urlsplit(url).path}?{urlencode({**query, 'tenant': 't-2'})}",
        f"{urlsplit(other).path}?{urlsplit(url).query}",
        url.replace("/downloads/t-1/", "/downloads/t-2/"),
    ]
    for attempt in forged:
        assert client.get(attempt).status_code == 403, attempt


_FIELDS = ("path", "tenant", "expires", "kid", "sig")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(_FIELDS),
    position=st.integers(min_value=0, max_value=200),
    replacement=st.text(
        alphabet=string.ascii_letters + string.digits + "-_./%=", min_size=1, max_size=3
    ),
)
def test_a_mutated_url_is_refused(
    served: tuple[TestClient, Clock, str, str], field: str, position: int, replacement: str
) -> None:
    """Any change to the path or to one query value is refused, never served and never an
    error of the server: 400 for a value not of its form, 403 for a bad signature (404 for
    a path no route takes, such as one ending in `/`)."""
    client, _, url, _ = served
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    values = {"path": parts.path.removeprefix("/downloads/"), **query}
    old = values[field]
    at = position % (len(old) + 1)
    values[field] = old[:at] + replacement + old[at + len(replacement) :]
    if values[field] == old:
        return
    path = values.pop("path")
    answer = client.get(f"/downloads/{path}?{urlencode(values)}")
    assert answer.status_code in (400, 403, 404), (field, values, answer.text)

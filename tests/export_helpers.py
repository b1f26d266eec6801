"""What the export and report tests share: bulk-loaded orders, a job run with a real
context, the files read back, and what the database says the rows are."""

from __future__ import annotations

import csv
import json
import random
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from pydantic import SecretStr
from sqlalchemy import Engine, insert, select

from consumers import GROUPS, OwnTransactionsContext, jobs
from consumers.dispatch import Dispatcher
from domain import CommandBus
from domain.reporting import SalesExportRequested, SalesReportRequested
from domain.schema import orders, products, sales_exports
from jobs.config import AppConfig
from outbox.types import utcnow
from web import DownloadSigner, KeyRing, SigningKey

__all__ = [
    "DAY0",
    "expected_rows",
    "export_row",
    "job_config",
    "load_orders",
    "read_csv",
    "read_xlsx",
    "run_job",
    "signer",
]

# Orders are placed on DAY0 and the days after it (a month ago: a period may not start later
# than today).
DAY0 = utcnow().date() - timedelta(days=30)
KEY = SigningKey("k1", SecretStr("an export signing key, 32 bytes!"))


def signer(exports_dir: Path, clock: Callable[[], datetime] = utcnow) -> DownloadSigner:
    return DownloadSigner(KeyRing([KEY]), exports_dir, clock=clock)


def job_config(exports_dir: Path, *, ttl_s: int = 3600, **extra: Any) -> AppConfig:
    return AppConfig(
        exports_dir=exports_dir,
        signer=extra.pop("url_signer", signer(exports_dir)),
        export_url_ttl_s=ttl_s,
        **extra,
    )


def load_orders(
    engine: Engine,
    tenant_id: str,
    count: int,
    *,
    days: int = 10,
    products_count: int = 50,
    seed: int = 1,
    names: Callable[[int], str] | None = None,
) -> None:
    """`count` orders of 1-3 lines over `days` days from DAY0, written straight into the
    projection tables (what the export reads), 5,000 per statement."""
    rng = random.Random(seed)
    now = utcnow()
    product_rows = [
        {
            "id": f"{tenant_id}-p{n}",
            "tenant_id": tenant_id,
            "name": names(n) if names else f"Product {n}",
            "sku": f"SKU-{n}",
            "price_cents": 100 + n,
            "stock_quantity": 1000,
            "created_at": now,
            "version": 1,
        }
        for n in range(products_count)
    ]
    statuses = ["PENDING", "PAID", "PAID", "PAID", "CANCELLED", "REFUNDED"]
    with engine.begin() as conn:
        conn.execute(insert(products), product_rows)
        batch: list[dict[str, Any]] = []
        for n in range(count):
            picked = rng.sample(product_rows, rng.choice((1, 1, 1, 2, 3)))
            lines = [
                {
                    "product_id": p["id"],
                    "quantity": rng.randint(1, 5),
                    "unit_price_cents": p["price_cents"],
                }
                for p in picked
            ]
            total = sum(line["quantity"] * line["unit_price_cents"] for line in lines)
            status = rng.choice(statuses)
            placed = datetime.combine(DAY0, datetime.min.time(), tzinfo=UTC) + timedelta(
                seconds=rng.randrange(days * 86400)
            )
            batch.append(
                {
                    "id": f"{tenant_id}-o{n:07d}",
                    "tenant_id": tenant_id,
                    "customer_email": f"c{n}@example.com",
                    "status": status,
                    "total_cents": total,
                    "lines": json.dumps(lines),
                    "placed_at": placed,
                    "version": 1,
                    "paid_cents": total if status in ("PAID", "REFUNDED") else 0,
                    "refunded_cents": total if status == "REFUNDED" else 0,
                }
            )
            if len(batch) == 5000:
                conn.execute(insert(orders), batch)
                batch = []
        if batch:
            conn.execute(insert(orders), batch)


def run_job(  # noqa: PLR0917 - the test's one way to run a job: its six parts, in order
    engine: Engine,
    bus: CommandBus,
    job_name: str,
    event: SalesExportRequested | SalesReportRequested,
    export_id: str,
    config: AppConfig,
    *,
    attempt: int = 1,
    now: datetime | None = None,
) -> None:
    """One attempt of a real job with a real context, as the worker would run it."""
    ctx = OwnTransactionsContext(
        engine,
        group="exports",
        job=job_name,
        event_id=str(uuid.uuid4()),
        message_id=str(uuid.uuid4()),
        key=export_id,
        attempt=attempt,
        headers={},
        now=now or utcnow(),
        bus=bus,
        dispatcher=Dispatcher(list(GROUPS.values()), jobs, shards=8),
        config=config,
    )
    jobs.get(job_name).handler(event, ctx)


def export_row(engine: Engine, export_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(sales_exports).where(sales_exports.c.id == export_id)).one()


def expected_rows(engine: Engine, tenant_id: str, first: date, last: date) -> list[list[str]]:
    """The export's rows as the database has them, computed here independently (one query,
    sorted in Python), every cell as the CSV shows it."""
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(last, datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
    with engine.connect() as conn:
        catalog = {r.id: r for r in conn.execute(select(products))}
        found = conn.execute(
            select(orders).where(
                orders.c.tenant_id == tenant_id,
                orders.c.placed_at >= start,
                orders.c.placed_at < end,
            )
        ).all()
    rows = []
    for o in sorted(found, key=lambda r: (r.placed_at, r.id)):
        for line in json.loads(o.lines):
            p = catalog[line["product_id"]]
            q, price = line["quantity"], line["unit_price_cents"]
            rows.append(
                [o.id, o.placed_at.isoformat(), o.status, o.customer_email, p.id, p.sku, p.name]
                + [
                    str(v)
                    for v in (q, price, q * price, o.total_cents, o.paid_cents, o.refunded_cents)
                ]
            )
    return rows


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8-sig") as source:
        header, *rows = list(csv.reader(source))
    return header, rows


def read_xlsx(path: Path) -> dict[str, list[list[str]]]:
    """Every sheet's rows (header included), each cell as text, read in read-only mode."""
    book = load_workbook(path, read_only=True)
    try:
        return {
            sheet.title: [
                ["" if v is None else str(v) for v in row]
                for row in sheet.iter_rows(values_only=True)
            ]
            for sheet in book.worksheets
        }
    finally:
        book.close()

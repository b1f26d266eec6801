"""Sales export benchmark: the real export code against a plain `csv.writer` over the same
SELECT, on PostgreSQL.

Usage::

    .venv/bin/python bench/exports.py [--orders 1000000] [--json]

Database ``outbox_bench_exports`` (migrated afresh; OUTBOX_BENCH_EXPORTS_URL overrides):
``--orders`` orders of one tenant, 1-3 lines each over 500 products, loaded with COPY. Then
each phase runs in a child process of its own, so that its peak RSS is its own:

* ``baseline``: the orders of the period streamed by one server-side cursor, each row
  written as it comes by `csv.writer` (no lines, no products, no cell checks);
* ``csv``: jobs/sales_rows.py + export_files.write_csv, what generate-sales-export
  runs: keyset chunks, lines parsed, products looked up, every text cell checked, a row per
  order line, fsync and rename;
* ``xlsx``: the same rows through XlsxWriter in constant memory.

Printed: orders/s and rows/s of each phase, the ratio of the real CSV export to the
baseline in rows/s (the goal: at least 0.5x) and in orders/s (the export writes a row per
order line, the baseline a row per order), and peak RSS of each child (the goal: at most
150 MB for both formats).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, select  # noqa: E402

from domain.schema import orders  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.dbadmin import create_database_if_missing, drop_all_tables  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from jobs.export_files import write_csv, write_xlsx  # noqa: E402
from jobs.sales_rows import COLUMNS, period_bounds, sales_rows  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_bench_exports"
TENANT = "bench"
FIRST, LAST = date(2026, 1, 1), date(2026, 12, 31)
PRODUCTS = 500


def load(engine: Engine, count: int) -> None:
    """`count` orders and PRODUCTS products, with COPY (psycopg), in one transaction."""
    rng = random.Random(7)
    now = datetime.now(UTC).replace(tzinfo=None)
    prices = [100 + n for n in range(PRODUCTS)]
    start = datetime.combine(FIRST, datetime.min.time())
    span = int((LAST - FIRST).days * 86400)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(  # type: ignore[attr-defined]
            "COPY products (id, tenant_id, name, sku, price_cents, stock_quantity, created_at,"
            " version) FROM STDIN"
        ) as copy:
            for n in range(PRODUCTS):
                copy.write_row(
                    (f"p{n}", TENANT, f"Product {n}", f"SKU-{n}", prices[n], 10**6, now, 1)
                )
        with cursor.copy(  # type: ignore[attr-defined]
            "COPY orders (id, tenant_id, customer_email, status, total_cents, lines, placed_at,"
            " version, paid_cents, refunded_cents) FROM STDIN"
        ) as copy:
            for n in range(count):
                picked = rng.sample(range(PRODUCTS), rng.choice((1, 1, 1, 2, 3)))
                lines = [
                    {
                        "product_id": f"p{p}",
                        "quantity": rng.randint(1, 5),
                        "unit_price_cents": prices[p],
                    }
                    for p in picked
                ]
                total = sum(line["quantity"] * line["unit_price_cents"] for line in lines)
                placed = start + timedelta(seconds=rng.randrange(span))
                status = rng.choice(("PAID", "PAID", "PENDING", "CANCELLED"))
                paid = total if status == "PAID" else 0
                copy.write_row(
                    (
                        f"o{n:08d}",
                        TENANT,
                        f"c{n}@example.com",
                        status,
                        total,
                        json.dumps(lines),
                        placed,
                        1,
                        paid,
                        0,
                    )
                )
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE orders")


def child(mode: str, url: str, folder: Path) -> dict[str, Any]:
    """One phase, in this (child) process: its figures and its peak RSS."""
    engine = make_engine(url)
    started = time.perf_counter()
    orders_done: int | None
    with engine.connect() as conn:
        if mode == "baseline":
            start, end = period_bounds(FIRST, LAST)
            o = orders
            query = select(
                o.c.id,
                o.c.placed_at,
                o.c.status,
                o.c.customer_email,
                o.c.total_cents,
                o.c.paid_cents,
                o.c.refunded_cents,
                o.c.lines,
            ).where(o.c.tenant_id == TENANT, o.c.placed_at >= start, o.c.placed_at < end)
            rows = 0
            with (folder / "baseline.csv").open("w", newline="") as sink:
                writer = csv.writer(sink)
                result = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
                for row in result:
                    writer.writerow(row)
                    rows += 1
            written_rows, orders_done = rows, rows
        else:
            write = write_csv if mode == "csv" else write_xlsx
            written = write(
                folder / f"export.{mode}", COLUMNS, sales_rows(conn, TENANT, FIRST, LAST)
            )
            written_rows = written.rows
            orders_done = None  # the parent fills in the baseline's count: the same orders
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode,
        "rows": written_rows,
        "orders": orders_done,
        "seconds": seconds,
        "peak_rss_mb": peak_kb / 1024,
    }


def run_child(mode: str, url: str, folder: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--folder", str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    create_database_if_missing(args.url)
    engine = make_engine(args.url)
    drop_all_tables(engine)
    upgrade(engine)
    started = time.perf_counter()
    load(engine, args.orders)
    load_s = time.perf_counter() - started
    engine.dispose()
    with tempfile.TemporaryDirectory() as tmp:
        phases = {m: run_child(m, args.url, Path(tmp)) for m in ("baseline", "csv", "xlsx")}
    n = phases["baseline"]["orders"]
    for phase in phases.values():
        phase["orders"] = n
        phase["orders_per_s"] = n / phase["seconds"]
        phase["rows_per_s"] = phase["rows"] / phase["seconds"]
    return {
        "orders": n,
        "load_s": load_s,
        "phases": phases,
        "ratio_csv_vs_baseline_rows_per_s": (
            phases["csv"]["rows_per_s"] / phases["baseline"]["rows_per_s"]
        ),
        "ratio_csv_vs_baseline_orders_per_s": (
            phases["csv"]["orders_per_s"] / phases["baseline"]["orders_per_s"]
        ),
        "ratio_xlsx_vs_baseline_orders_per_s": (
            phases["xlsx"]["orders_per_s"] / phases["baseline"]["orders_per_s"]
        ),
    }


def report(results: dict[str, Any]) -> None:
    print(f"{results['orders']:,} orders loaded with COPY in {results['load_s']:.1f} s")
    print(
        f"{'phase':10} {'rows':>10} {'seconds':>8} {'orders/s':>10} {'rows/s':>10} {'peak RSS':>9}"
    )
    for mode, p in results["phases"].items():
        print(
            f"{mode:10} {p['rows']:>10,} {p['seconds']:>8.1f} {p['orders_per_s']:>10,.0f} "
            f"{p['rows_per_s']:>10,.0f} {p['peak_rss_mb']:>6.0f} MB"
        )
    print(
        "CSV export vs plain csv.writer (rows/s): "
        f"{results['ratio_csv_vs_baseline_rows_per_s']:.2f}x (goal >= 0.5x); in orders/s "
        "(a row per order line, 1.6 per order): "
        f"{results['ratio_csv_vs_baseline_orders_per_s']:.2f}x"
    )
    print(
        "XLSX export vs plain csv.writer (orders/s): "
        f"{results['ratio_xlsx_vs_baseline_orders_per_s']:.2f}x"
    )
    worst = max(results["phases"][m]["peak_rss_mb"] for m in ("csv", "xlsx"))
    print(f"peak RSS of the exports: {worst:.0f} MB (goal <= 150 MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--url", default=os.environ.get("OUTBOX_BENCH_EXPORTS_URL", DEFAULT_URL))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=("baseline", "csv", "xlsx"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.url, args.folder)))
        return 0
    if not 1 <= args.orders <= 10_000_000:
        parser.error("--orders: 1 to 10,000,000")
    results = measure(args)
    if args.json:
        print(json.dumps(results))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The demo's exports part: a CSV sales export and a PDF sales report requested for Acme,
written by the exports group's jobs, then downloaded through their signed URLs from
`outbox serve` (the first rows of the CSV, the first page of the PDF as text, with pypdf);
a tampered URL is refused.

Called by `pipeline/demo.py` as `run_exports_demo(engine, settings, console)`, after the
scenario (tenant `acme` and its orders) and with the embedded broker running (`settings`
names it). It needs no SMTP server.
"""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr
from pypdf import PdfReader
from rich.console import Console
from sqlalchemy import Engine, select

from domain import CommandBus
from domain.reporting import RequestSalesExport, RequestSalesReport
from domain.schema import sales_exports
from jobs.mail import mask_address
from pipeline.demo.consumers import table_of
from pipeline.settings import Settings
from pipeline.wiring import build_relay, build_web_app, build_worker

__all__ = ["run_exports_demo"]

# The demo's own download key; never a real one.
DEMO_KEY = "demo:demo-only-download-signing-key"
TENANT = "acme"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _states(engine: Engine, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    e = sales_exports
    with engine.connect() as conn:
        rows = conn.execute(select(e.c.id, e.c.status, e.c.url).where(e.c.id.in_(ids))).all()
    return {row.id: (row.status, row.url) for row in rows}


def run_exports_demo(
    engine: Engine, settings: Settings, console: Console, exports_dir: Path = Path("var/exports")
) -> None:
    console.rule("sales exports and PDF reports behind signed URLs")
    settings = settings.model_copy(
        update={"download_signing_keys": [SecretStr(DEMO_KEY)], "exports_dir": exports_dir}
    )
    bus = CommandBus(engine, shards=settings.outbox_shards)
    today = datetime.now(UTC).date()
    period = {"tenant_id": TENANT, "period_from": today - timedelta(days=30), "period_to": today}
    ids = [
        bus.dispatch(RequestSalesExport(format="csv", **period)).aggregate_id,
        bus.dispatch(RequestSalesReport(**period)).aggregate_id,
    ]
    console.print(f"requested: a CSV export {ids[0][:8]}... and a PDF report {ids[1][:8]}...")
    build_relay(settings, engine).run(once=True)
    worker = build_worker(settings, engine, "exports")
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(state != "requested" for state, _ in _states(engine, ids).values()):
            break
        time.sleep(0.2)
    worker.stop()
    runner.join(timeout=30)
    states = _states(engine, ids)
    if any(states.get(i, ("", None))[0] != "ready" for i in ids):
        console.print(f"[red]the exports did not become ready: {states}[/red]")
        return
    _download(settings, engine, console, [str(states[i][1]) for i in ids])


def _download(settings: Settings, engine: Engine, console: Console, urls: list[str]) -> None:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            build_web_app(settings, engine), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        export, report = (httpx.get(base + url, timeout=30) for url in urls)
        tampered = httpx.get(base + urls[0].replace("tenant=acme", "tenant=acme2"), timeout=10)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    console.print(
        f"GET the CSV's signed URL: [bold]{export.status_code}[/bold], {len(export.content):,} "
        f"bytes; the PDF's: [bold]{report.status_code}[/bold]; the CSV's URL claimed by "
        f"another tenant: [bold]{tampered.status_code}[/bold]"
    )
    header, *rows = list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"))))
    shown = [[mask_address(c) if "@" in c else c for c in row[:9]] for row in rows[:5]]
    console.print(table_of("the export's first rows (addresses masked)", header[:9], shown))
    page = PdfReader(io.BytesIO(report.content)).pages[0].extract_text()
    console.print("[bold]the report's first page:[/bold]")
    console.print(page, markup=False, highlight=False)

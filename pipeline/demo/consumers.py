"""The demo's second half: consumer groups run their jobs on what the relay published."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, select

from consumers.metrics import ConsumerMetrics
from consumers.runtime import Worker
from domain.schema import products, tenant_daily_analytics, visitor_activity
from jobs.analytics import TenantAnalyticsSyncRequested
from outbox.rollups import RollupFlusher, Rollups
from outbox.schema import failed_jobs_table, inbox_table
from outbox.schema_rollups import rollups_table
from pipeline.errors import SettingsError
from pipeline.settings import Settings, load_settings
from pipeline.wiring import build_dispatcher, build_worker
from relay import KafkaPublisher, Relay, RelayConfig
from relay.metrics import RelayMetrics

__all__ = ["SHARDS", "demo_settings", "run_consumers", "table_of", "write_demo_images"]

# The demo's outbox shards.
SHARDS = 16


def write_demo_images(storage_dir: Path) -> None:
    """A real product photo stand-in (a gradient PNG) and a damaged JPEG."""
    try:
        storage_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"STORAGE_DIR: cannot create {storage_dir}: {exc.strerror or exc}"
        ) from None
    width, height = 96, 64
    image = Image.new("RGB", (width, height))
    image.putdata([(40 + x * 2, 60 + y * 2, 160 - x) for y in range(height) for x in range(width)])
    image.save(storage_dir / "anvil.png", "PNG")
    (storage_dir / "rocket.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def table_of(title: str, columns: list[str], rows: Sequence[Any]) -> Table:
    """A titled table of query rows (None shown empty)."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def demo_settings(bootstrap: str, storage_dir: Path) -> Settings:
    """The demo's settings: the embedded broker, a free port for the demo SMTP server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        smtp_port = probe.getsockname()[1]
    return load_settings(
        outbox_shards=SHARDS,
        kafka_bootstrap_servers=bootstrap,
        storage_dir=storage_dir,
        # The embedded broker joins a group in ~3 s with short timeouts (docs/measured.md).
        consumer_session_timeout_ms=6000,
        consumer_max_poll_interval_ms=6000,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_from="reminders@acme.example",
    )


def run_consumers(engine: Engine, settings: Settings, console: Console) -> None:
    """Run the relay and the media and analytics groups until their jobs are done."""
    console.rule("consumer groups: idempotent jobs")
    # As `outbox relay` and `outbox consume` do: the dashboard's charts (its rollups) are
    # written by the runners, here flushed when they stop.
    rollups = Rollups()
    relay = Relay(
        engine,
        lambda: KafkaPublisher(settings.kafka_bootstrap_servers, client_id="demo-relay"),
        RelayConfig(shards=settings.outbox_shards, poll_max_s=0.1),
        metrics=RelayMetrics(rollups=rollups),
    )
    workers = [
        build_worker(settings, engine, name, metrics=ConsumerMetrics(rollups=rollups))
        for name in ("media", "analytics")
    ]
    runners: list[Relay | Worker] = [relay, *workers]
    with RollupFlusher(rollups, engine):
        _run_until_done(engine, settings, runners, console)
    _show(engine, console)
    with engine.connect() as conn:
        charted = conn.execute(select(func.count()).select_from(rollups_table)).scalar_one()
    console.print(
        f"the dashboard's charts: [bold]{charted}[/bold] rollup rows (per minute, quarter-hour "
        "and 4 h; handled, failed, published, wait and run-time histograms) in job_rollups"
    )


def _run_until_done(
    engine: Engine, settings: Settings, runners: list[Relay | Worker], console: Console
) -> None:
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    today = datetime.now(UTC).date()
    with engine.begin() as conn:
        build_dispatcher(settings).dispatch(
            conn,
            "sync-tenant-analytics",
            TenantAnalyticsSyncRequested(tenant_id="acme", day=today),
        )
    console.print(
        "started `outbox consume --group media` and `--group analytics` (in threads) and "
        f"dispatched sync-tenant-analytics for acme, {today}"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _done(engine):
        time.sleep(0.2)
    for runner in reversed(runners):
        runner.stop()
    for thread in threads:
        thread.join(timeout=30)


def _done(engine: Engine) -> bool:
    with engine.connect() as conn:
        hashed = conn.execute(
            select(func.count()).select_from(products).where(products.c.blurhash.is_not(None))
        ).scalar_one()
        failed = conn.execute(select(func.count()).select_from(failed_jobs_table)).scalar_one()
        rollups = conn.execute(
            select(func.count()).select_from(tenant_daily_analytics)
        ).scalar_one()
        visitors = conn.execute(select(func.count()).select_from(visitor_activity)).scalar_one()
    return bool(hashed >= 1 and failed >= 1 and rollups >= 1 and visitors >= 3)


def _show(engine: Engine, console: Console) -> None:
    i, f = inbox_table.c, failed_jobs_table.c
    with engine.connect() as conn:
        console.print(
            table_of(
                "products: BlurHash set by generate-product-blurhash (through a domain command)",
                ["product", "image", "blurhash"],
                conn.execute(
                    select(products.c.id, products.c.image_path, products.c.blurhash).order_by(
                        products.c.id
                    )
                ).all(),
            )
        )
        console.print(
            table_of(
                "visitor_activity: record-interaction, once per event",
                ["tenant", "visitor", "interactions"],
                conn.execute(
                    select(
                        visitor_activity.c.tenant_id,
                        visitor_activity.c.visitor_id,
                        visitor_activity.c.interactions,
                    ).order_by(visitor_activity.c.visitor_id)
                ).all(),
            )
        )
        t = tenant_daily_analytics.c
        console.print(
            table_of(
                "tenant_daily_analytics: sync-tenant-analytics (unique per tenant and day)",
                ["tenant", "day", "page views", "product views", "unique visitors"],
                conn.execute(
                    select(t.tenant_id, t.day, t.page_views, t.product_views, t.unique_visitors)
                ).all(),
            )
        )
        console.print(
            table_of(
                "inbox: what each group's jobs have done",
                ["group", "job", "status", "messages"],
                conn.execute(
                    select(i.group_name, i.job_name, i.status, func.count())
                    .group_by(i.group_name, i.job_name, i.status)
                    .order_by(i.group_name, i.job_name)
                ).all(),
            )
        )
        console.print(
            table_of(
                "failed jobs (`outbox failed list`; retry with `outbox failed retry ID`)",
                ["id", "group", "job", "reason", "error"],
                conn.execute(
                    select(f.id, f.group_name, f.job_name, f.reason, f.exception_message)
                ).all(),
            )
        )

"""The first jobs, through the domain: product image BlurHash and analytics."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import Engine, select

from consumers import GROUPS, JobConfig, jobs
from consumers.jobs.analytics import TenantAnalyticsSyncRequested
from consumers.jobs.blurhash import compute_blurhash
from domain import CommandBus
from domain.analytics import RecordInteraction
from domain.catalog import UploadProductImage
from domain.events import registry
from domain.schema import products, tenant_daily_analytics, visitor_activity
from pipeline.broker import EmbeddedBroker
from tests.consumer_harness import failed_rows, harness, wait_for
from tests.scenario import onboard, product


def _gradient(path: Path, size: tuple[int, int], fmt: str) -> None:
    image = Image.new("RGB", size)
    image.putdata(
        [
            (x * 255 // size[0], y * 255 // size[1], (x + y) % 256)
            for y in range(size[1])
            for x in range(size[0])
        ]
    )
    image.save(path, fmt)


def _blurhashes(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(products.c.id, products.c.blurhash)).all())


def test_uploaded_images_get_their_blurhash_and_a_corrupt_one_fails_clearly(
    postgres_db: Engine, private_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    _gradient(tmp_path / "p1.png", (320, 200), "PNG")
    _gradient(tmp_path / "p2.jpg", (640, 480), "JPEG")
    (tmp_path / "p3.jpg").write_bytes(random.Random(7).randbytes(4096))
    Image.new("1", (20_000, 20_000)).save(tmp_path / "p4.png")  # a decompression bomb
    os.mkfifo(tmp_path / "p5.png")  # would block a reader until its time limit
    bus = CommandBus(postgres_db, shards=8)
    onboard(bus)
    names = {"p1": "p1.png", "p2": "p2.jpg", "p3": "p3.jpg", "p4": "p4.png", "p5": "p5.png"}
    for pid, name in names.items():
        product(bus, pid)
        bus.dispatch(UploadProductImage(product_id=pid, image_path=name))
    media = GROUPS["media"]
    with harness(
        postgres_db,
        private_broker.bootstrap_servers,
        media,
        jobs,
        events=registry,
        job_config=JobConfig(storage_dir=tmp_path),
    ) as h:
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: worker.stats.processed == 2 and worker.stats.failed == 3, timeout_s=30)
    hashes = _blurhashes(postgres_db)
    assert hashes["p1"] == compute_blurhash(tmp_path / "p1.png")
    assert hashes["p2"] == compute_blurhash(tmp_path / "p2.jpg")
    assert len(hashes["p1"]) == 28  # 4x3 components
    assert hashes["p1"] != hashes["p2"]
    assert hashes["p3"] is None
    failed = failed_rows(postgres_db, "media")
    # A corrupt file, a bomb and a FIFO are refused on the first try, each with its reason.
    assert {(f.job_name, f.reason, f.attempts) for f in failed} == {
        ("generate-product-blurhash", "rejected", 1)
    }
    messages = sorted(f.exception_message for f in failed)
    assert "p3.jpg is not a readable image" in messages[0]
    assert "p4.png has too many pixels" in messages[1]
    assert "p5.png is not a regular file" in messages[2]


def test_interactions_are_counted_per_visitor_and_the_daily_rollup_is_idempotent(
    engine: Engine, private_broker: EmbeddedBroker
) -> None:
    bus = CommandBus(engine, shards=8)
    onboard(bus)
    visits = [("v1", "page_view"), ("v1", "product_view"), ("v1", "checkout"), ("v2", "page_view")]
    for visitor, kind in visits:
        bus.dispatch(RecordInteraction(tenant_id="t-1", visitor_id=visitor, kind=kind))
    today = datetime.now(UTC).date()
    analytics = GROUPS["analytics"]
    with harness(engine, private_broker.bootstrap_servers, analytics, jobs, events=registry) as h:
        h.start_relay()
        worker = h.start_worker()
        wait_for(lambda: worker.stats.processed == 4, what="four interactions")
        request = TenantAnalyticsSyncRequested(tenant_id="t-1", day=today)
        first = h.in_transaction(
            lambda c: h.dispatcher.dispatch(c, "sync-tenant-analytics", request)
        )
        duplicate = h.in_transaction(
            lambda c: h.dispatcher.dispatch(c, "sync-tenant-analytics", request)
        )
        assert first is not None and duplicate is None
        wait_for(lambda: worker.stats.processed == 5, what="rollup")
        before = _rollup(engine)
        again = h.in_transaction(
            lambda c: h.dispatcher.dispatch(c, "sync-tenant-analytics", request)
        )
        assert again is not None  # the lock was released when the first run succeeded
        wait_for(lambda: worker.stats.processed == 6, what="second rollup")
    assert _rollup(engine) == before == [("t-1", today.isoformat(), 2, 1, 0, 1, 2)]
    with engine.connect() as conn:
        visitors = conn.execute(
            select(visitor_activity.c.visitor_id, visitor_activity.c.interactions).order_by(
                visitor_activity.c.visitor_id
            )
        ).all()
    assert [tuple(v) for v in visitors] == [("v1", 3), ("v2", 1)]


def _rollup(engine: Engine) -> list[tuple[Any, ...]]:
    t = tenant_daily_analytics
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                t.c.tenant_id,
                t.c.day,
                t.c.page_views,
                t.c.product_views,
                t.c.add_to_cart,
                t.c.checkouts,
                t.c.unique_visitors,
            )
        ).all()
    return [tuple(r) for r in rows]

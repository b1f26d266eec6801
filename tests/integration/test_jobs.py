"""The first jobs, through the domain: product image BlurHash and analytics (run with
consumers.testing: the real attempt path, no broker)."""

from __future__ import annotations

import os
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import Engine, select

from consumers.testing import JobRunner
from domain import CommandBus
from domain.analytics import RecordInteraction
from domain.products import UploadProductImage
from domain.schema import products, tenant_daily_analytics, visitor_activity
from jobs.analytics import TenantAnalyticsSyncRequested
from jobs.blurhash import compute_blurhash
from jobs.config import AppConfig
from outbox.schema import failed_jobs_table
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
    engine: Engine, tmp_path: Path
) -> None:
    _gradient(tmp_path / "p1.png", (320, 200), "PNG")
    _gradient(tmp_path / "p2.jpg", (640, 480), "JPEG")
    (tmp_path / "p3.jpg").write_bytes(random.Random(7).randbytes(4096))
    Image.new("1", (20_000, 20_000)).save(tmp_path / "p4.png")  # a decompression bomb
    os.mkfifo(tmp_path / "p5.png")  # would block a reader until its time limit
    bus = CommandBus(engine, shards=8)
    onboard(bus)
    names = {"p1": "p1.png", "p2": "p2.jpg", "p3": "p3.jpg", "p4": "p4.png", "p5": "p5.png"}
    for pid, name in names.items():
        product(bus, pid)
        bus.dispatch(UploadProductImage(product_id=pid, image_path=name))
    runner = JobRunner(engine, config=AppConfig(storage_dir=tmp_path))
    outcomes = Counter(r.outcome for r in runner.drain("media"))
    assert outcomes == {"done": 2, "failed": 3}
    hashes = _blurhashes(engine)
    assert hashes["p1"] == compute_blurhash(tmp_path / "p1.png")
    assert hashes["p2"] == compute_blurhash(tmp_path / "p2.jpg")
    assert len(hashes["p1"]) == 28  # 4x3 components
    assert hashes["p1"] != hashes["p2"]
    assert hashes["p3"] is None
    failed = _failed(engine, "media")
    # A corrupt file, a bomb and a FIFO are refused on the first try, each with its reason.
    assert {(f.job_name, f.reason, f.attempts) for f in failed} == {
        ("generate-product-blurhash", "rejected", 1)
    }
    messages = sorted(f.exception_message for f in failed)
    assert "p3.jpg is not a readable image" in messages[0]
    assert "p4.png has too many pixels" in messages[1]
    assert "p5.png is not a regular file" in messages[2]


def _failed(engine: Engine, group: str) -> list[Any]:
    f = failed_jobs_table
    with engine.connect() as conn:
        return list(conn.execute(select(f).where(f.c.group_name == group).order_by(f.c.id)).all())


def test_interactions_are_counted_per_visitor_and_the_daily_rollup_is_idempotent(
    engine: Engine,
) -> None:
    bus = CommandBus(engine, shards=8)
    onboard(bus)
    visits = [("v1", "page_view"), ("v1", "product_view"), ("v1", "checkout"), ("v2", "page_view")]
    for visitor, kind in visits:
        bus.dispatch(RecordInteraction(tenant_id="t-1", visitor_id=visitor, kind=kind))
    today = datetime.now(UTC).date()
    runner = JobRunner(engine)
    assert [r.outcome for r in runner.drain("analytics")] == ["done"] * 4
    request = TenantAnalyticsSyncRequested(tenant_id="t-1", day=today)

    def dispatch() -> str | None:
        with engine.begin() as conn:
            return runner.dispatcher.dispatch(conn, "sync-tenant-analytics", request)

    first = dispatch()
    duplicate = dispatch()
    assert first is not None and duplicate is None
    assert [(r.job, r.outcome) for r in runner.drain("analytics")] == [
        ("sync-tenant-analytics", "done")
    ]
    before = _rollup(engine)
    again = dispatch()
    assert again is not None  # the lock was released when the first run succeeded
    assert [r.outcome for r in runner.drain("analytics")] == ["done"]
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

"""Migration 0017 on every backend: orders and ledger entries written before it keep their
money, gain the default currency (NULL) and the refund id "" of a payment's only refund; an
order refunded in part becomes PARTIALLY_REFUNDED, as a rebuild would make it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from domain.schema import orders, payment_ledger
from infra.db import make_engine
from infra.dbadmin import create_database_if_missing, drop_all_tables
from infra.migrate import upgrade
from tests.conftest import SERVER_URLS

pytestmark = pytest.mark.integration
AT = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def at_0016(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of its own (not the shared test one), migrated to 0016."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'at0016.db'}")
    else:
        url = make_url(SERVER_URLS[request.param])
        url = url.set(database=f"{url.database}_m0017")
        rendered = url.render_as_string(hide_password=False)
        try:
            create_database_if_missing(rendered)
        except OperationalError as exc:  # a missing server skips, as the fixtures do
            pytest.skip(f"{request.param} is not reachable: {exc}")
        engine = make_engine(rendered)
        drop_all_tables(engine)
    upgrade(engine, "0016")
    yield engine
    engine.dispose()


def _order(order_id: str, status: str, refunded: int) -> dict[str, object]:
    return {
        "id": order_id,
        "tenant_id": "t-1",
        "customer_email": "a@example.com",
        "status": status,
        "total_cents": 2500,
        "lines": "[]",
        "placed_at": AT,
        "version": 3,
        "paid_cents": 2500,
        "refunded_cents": refunded,
    }


def _entry(order_id: str, kind: str, cents: int) -> dict[str, object]:
    return {
        "gateway": "stripe",
        "payment_id": f"pi-{order_id}",
        "kind": kind,
        "order_id": order_id,
        "tenant_id": "t-1",
        "amount_cents": cents,
        "recorded_at": AT,
        "event_id": f"e-{order_id}-{kind}",
    }


def test_orders_and_ledger_entries_from_before_keep_their_money(at_0016: Engine) -> None:
    engine = at_0016
    o, lg = orders, payment_ledger
    with engine.begin() as conn:
        conn.execute(
            insert(o),
            [
                _order("o-paid", "PAID", 0),
                _order("o-part", "PAID", 1000),
                _order("o-full", "REFUNDED", 2500),
            ],
        )
        conn.execute(
            insert(lg),
            [_entry(oid, "payment", 2500) for oid in ("o-paid", "o-part", "o-full")]
            + [_entry("o-part", "refund", 1000), _entry("o-full", "refund", 2500)],
        )

    upgrade(engine)

    with engine.begin() as conn:
        rows = conn.execute(
            select(o.c.id, o.c.status, o.c.paid_cents, o.c.refunded_cents, o.c.currency)
        )
        states = {r.id: (r.status, r.paid_cents, r.refunded_cents, r.currency) for r in rows}
        assert states == {
            "o-paid": ("PAID", 2500, 0, None),
            "o-part": ("PARTIALLY_REFUNDED", 2500, 1000, None),
            "o-full": ("REFUNDED", 2500, 2500, None),
        }
        entries = conn.execute(
            select(
                lg.c.order_id, lg.c.kind, lg.c.refund_id, lg.c.amount_cents, lg.c.currency
            ).order_by(lg.c.order_id, lg.c.kind)
        ).all()
        assert [tuple(e) for e in entries] == [
            ("o-full", "payment", "", 2500, None),
            ("o-full", "refund", "", 2500, None),
            ("o-paid", "payment", "", 2500, None),
            ("o-part", "payment", "", 2500, None),
            ("o-part", "refund", "", 1000, None),
        ]
        # The new key takes a second refund of the same payment.
        conn.execute(insert(lg), {**_entry("o-part", "refund", 500), "refund_id": "re_2"})

"""The rows of a sales export: one tenant's orders of a period, one row per order line, read
in keyset chunks and made safe for a spreadsheet.

Orders are read in (placed_at, id) order, CHUNK per query, each query starting after the
last row seen (`ix_orders_tenant_placed_at` makes each chunk one index range): no OFFSET,
and never the whole period in memory. An order's lines are the JSON its projection keeps
(product id, quantity, unit price at the time); product SKUs and names are looked up once
per chunk for the products not seen yet.

Text from the database is not trusted: a cell that starts with `=`, `+`, `-`, `@`, a tab
or a carriage return would be read as a formula by a spreadsheet (CSV injection), so it
gets a leading `'`; control characters (NUL included) are dropped, since XML cannot hold
them and they have no business in a sales figure; a cell is cut at MAX_CELL_CHARS, the
most an XLSX cell holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, DateTime, or_, select, type_coerce

from domain.schema import orders, products

__all__ = [
    "CHUNK",
    "COLUMNS",
    "MAX_CELL_CHARS",
    "Cell",
    "SalesDataError",
    "cell_text",
    "order_chunks",
    "period_bounds",
    "sales_rows",
]

Cell = str | int
CHUNK = 5000
MAX_CELL_CHARS = 32_767
# Products remembered between chunks; past this the lookup cache starts again.
MAX_CACHED_PRODUCTS = 50_000
COLUMNS = (
    "order_id",
    "placed_at",
    "status",
    "customer_email",
    "product_id",
    "sku",
    "product_name",
    "quantity",
    "unit_price_cents",
    "line_total_cents",
    "order_total_cents",
    "paid_cents",
    "refunded_cents",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")

o, p = orders, products
# The stored naive UTC value, without UTCDateTime's conversion of every row to an aware
# datetime (a sixth of the export's time): its text is the same with "+00:00" appended.
_PLACED_UTC = type_coerce(o.c.placed_at, DateTime()).label("placed_utc")


class SalesDataError(Exception):
    """A stored order cannot be exported (its lines are not what the projection writes).
    Not retried: the same data fails the same way; the message names the order."""


def cell_text(value: object) -> str:
    """A text cell a spreadsheet shows as text: no formula, no control characters, bounded."""
    text = "" if value is None else str(value)
    if text.isprintable() and len(text) < MAX_CELL_CHARS and not text.startswith(_FORMULA_START):
        return text  # the common case, without a regex
    text = _CONTROL.sub("", text)
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text[:MAX_CELL_CHARS]


def period_bounds(period_from: date, period_to: date) -> tuple[datetime, datetime]:
    """[start, end) in UTC of whole days `period_from` to `period_to` inclusive."""
    start = datetime.combine(period_from, time.min, tzinfo=UTC)
    return start, datetime.combine(period_to, time.min, tzinfo=UTC) + timedelta(days=1)


def order_chunks(
    conn: Connection,
    tenant_id: str,
    period_from: date,
    period_to: date,
    *columns: Any,
    chunk: int | None = None,
) -> Iterator[Sequence[Any]]:
    """The tenant's orders placed in the period (`columns`, then `placed_utc`, the stored
    naive UTC time, and id), oldest first, `chunk` (CHUNK) per query."""
    start, end = period_bounds(period_from, period_to)
    size = chunk or CHUNK
    query = (
        select(*columns, _PLACED_UTC, o.c.id)
        .where(o.c.tenant_id == tenant_id, o.c.placed_at >= start, o.c.placed_at < end)
        .order_by(o.c.placed_at, o.c.id)
        .limit(size)
    )
    last: tuple[datetime, str] | None = None
    while True:
        page = query
        if last is not None:
            # `>=` first: one index range on every backend; then the keyset's tie-break.
            page = query.where(
                o.c.placed_at >= last[0], or_(o.c.placed_at > last[0], o.c.id > last[1])
            )
        rows = conn.execute(page).all()
        if rows:
            yield rows
        if len(rows) < size:
            return
        last = (rows[-1].placed_utc.replace(tzinfo=UTC), rows[-1].id)


@dataclass(frozen=True, slots=True)
class _Product:
    id: str
    sku: str
    name: str


class _Products:
    """SKU and name by product id, looked up per chunk for the ids not seen yet."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._known: dict[str, _Product] = {}

    def load(self, ids: set[str]) -> None:
        if len(self._known) > MAX_CACHED_PRODUCTS:
            self._known.clear()
        missing = sorted(ids - self._known.keys())
        for start in range(0, len(missing), 1000):
            batch = missing[start : start + 1000]
            for row in self._conn.execute(
                select(p.c.id, p.c.sku, p.c.name).where(p.c.id.in_(batch))
            ):
                self._known[row.id] = _Product(
                    cell_text(row.id), cell_text(row.sku), cell_text(row.name)
                )

    def get(self, product_id: str) -> _Product:
        # A product that is gone (a projection rebuilt without it) still shows its id.
        return self._known.get(product_id) or _Product(cell_text(product_id), "", "")


def _lines(order_id: str, text: str) -> list[tuple[str, int, int]]:
    try:
        lines = orjson.loads(text)
        return [
            (str(line["product_id"]), int(line["quantity"]), int(line["unit_price_cents"]))
            for line in lines
        ]
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise SalesDataError(
            f"order {order_id[:64]!r} has unreadable lines ({type(exc).__name__}); "
            "rebuild the projections (`outbox projections rebuild`) and request it again"
        ) from None


_ORDER_COLUMNS = (
    o.c.status,
    o.c.customer_email,
    o.c.total_cents,
    o.c.paid_cents,
    o.c.refunded_cents,
    o.c.lines,
)


def sales_rows(
    conn: Connection, tenant_id: str, period_from: date, period_to: date
) -> Iterator[list[tuple[Cell, ...]]]:
    """The export's rows (COLUMNS), a chunk of orders at a time. An order without lines still
    gets one row, its product columns empty."""
    catalog = _Products(conn)
    statuses: dict[str, str] = {}
    for chunk in order_chunks(conn, tenant_id, period_from, period_to, *_ORDER_COLUMNS):
        parsed = [(order, _lines(order.id, order.lines)) for order in chunk]
        catalog.load({line[0] for _, lines in parsed for line in lines})
        rows: list[tuple[Cell, ...]] = []
        for order, lines in parsed:
            status = statuses.get(order.status)
            if status is None:
                status = statuses[order.status] = cell_text(order.status)
            head: tuple[Cell, ...] = (
                cell_text(order.id),
                order.placed_utc.isoformat() + "+00:00",
                status,
                cell_text(order.customer_email),
            )
            tail: tuple[Cell, ...] = (order.total_cents, order.paid_cents, order.refunded_cents)
            if not lines:
                rows.append((*head, "", "", "", "", "", "", *tail))
            for product_id, quantity, unit_price in lines:
                product = catalog.get(product_id)
                line = (product.id, product.sku, product.name, quantity, unit_price)
                rows.append((*head, *line, quantity * unit_price, *tail))
        yield rows

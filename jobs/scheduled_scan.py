"""What the scheduled coordinators share: an operator's tenant narrowing,
and walking the tenants in keyset chunks (never OFFSET: each chunk is one index range)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Select, select

from consumers import ScheduledJobDue
from domain.schema import tenants

__all__ = ["TENANT_CHUNK", "keyset_chunks", "only_tenant", "tenant_chunks"]

# Tenants read per query (a module constant, read at each call, so that tests can cross
# chunks with a handful of tenants).
TENANT_CHUNK = 500


def only_tenant(due: ScheduledJobDue) -> str | None:
    """The tenant an operator narrowed the run to (`params["tenant_id"]`), else None: all."""
    return due.params.get("tenant_id") or None


def keyset_chunks(
    conn: Connection, query: Select[Any], key: Any, *, chunk: int
) -> Iterator[list[Any]]:
    """The rows of `query` in `key` order (a unique column), `chunk` per query: each query
    starts after the last key seen, so the walk is one index range per chunk."""
    ordered = query.order_by(key).limit(chunk)
    last: Any = None
    while True:
        page = ordered if last is None else ordered.where(key > last)
        rows = list(conn.execute(page).all())
        if rows:
            yield rows
        if len(rows) < chunk:
            return
        last = rows[-1]._mapping[key]


def tenant_chunks(
    conn: Connection,
    *columns: Any,
    chunk: int | None = None,
    approved_only: bool = False,
    tenant_id: str | None = None,
) -> Iterator[list[Any]]:
    """Tenant rows (id first, then `columns`) in id order, `chunk` (TENANT_CHUNK) at a time."""
    t = tenants
    query = select(t.c.id, *columns)
    if approved_only:
        query = query.where(t.c.status == "approved")
    if tenant_id is not None:
        query = query.where(t.c.id == tenant_id)
    return keyset_chunks(conn, query, t.c.id, chunk=chunk or TENANT_CHUNK)

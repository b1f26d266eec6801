"""The claim (ADR 021): hands due deliveries to a dispatcher, endpoint by endpoint, as runs.

    claimed = claim_due(conn, owner, now, limit=32, config, per_endpoint=8)
    release(conn, claimed[3:])   # a run cut short: back to pending, due at once

A claim takes up to `limit` endpoints and, for each, a *run* of up to `per_endpoint` of its
due deliveries, which the dispatcher sends one after another (an ordered endpoint's on one
thread; a slow unordered one's on up to `endpoint_concurrency` lanes at once) and cuts short at
the first that is not delivered. The rules live here, checked in the database, so that they
hold however many dispatchers run:

- one run per endpoint at a time: an endpoint with a delivery in flight (a live lease) gets
  nothing (so the requests in flight to one endpoint never exceed one run's lanes, however
  many dispatchers run);
- an ordered endpoint gets its oldest undelivered deliveries (lowest ids), and only the due
  ones from the head on: a failing head holds that endpoint's later deliveries, nobody
  else's;
- a paused endpoint gets nothing until `paused_until`; then one delivery (the breaker's
  half-open probe; the outcome closes or re-opens it, outbound.health);
- the rate limit: an endpoint whose `next_send_at` is ahead is skipped; a rate-limited
  endpoint gets one delivery, and the claim moves its `next_send_at` on by 1 /
  `rate_limit_per_s` in the same transaction.

PostgreSQL and MariaDB lock the endpoint rows with FOR UPDATE SKIP LOCKED (two dispatchers
never wait on, nor both take, one endpoint); the endpoints and their deliveries are then read
by fresh statements under that lock (READ COMMITTED sees the last claim's commit) and taken
with one fenced UPDATE. SQLite has one writer (BEGIN IMMEDIATE). A claim costs the same six
statements whether it takes one delivery or hundreds.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    Integer,
    and_,
    bindparam,
    func,
    or_,
    select,
    union_all,
    update,
)

from outbound.config import WebhookConfig
from outbound.deliveries import UNDELIVERED, DeliveryStatus
from outbound.endpoint_rules import signing_tokens
from outbound.ports import EndpointState
from outbox.schema_webhooks import webhook_deliveries_table as d
from outbox.schema_webhooks import webhook_endpoints_table as e

__all__ = ["Claimed", "claim_due", "release"]

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_COLUMNS = [d.c.id, d.c.endpoint_id, d.c.event_id, d.c.webhook_id, d.c.tenant_id, d.c.event_type]
_COLUMNS += [d.c.payload, d.c.attempts, d.c.status, d.c.next_attempt_at, d.c.lease_expires_at]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased to one dispatcher: what it sends, and the lease that fences what it
    writes back (`lease_owner` is unique to the claim that took it)."""

    id: int
    endpoint_id: str
    event_id: str
    webhook_id: str
    tenant_id: str
    event_type: str
    body: bytes
    attempt: int  # this attempt's number, 1 for the first
    url: str
    lease_owner: str
    lease_expires_at: datetime
    half_open: bool  # the endpoint was paused: this is the breaker's probe
    # The endpoint's signing secrets as stored (encrypted), read under the claim's lock: the
    # current one, then the previous one while a rotation's overlap lasts.
    secret_tokens: tuple[str, ...] = field(repr=False)
    # The endpoint was enabled with no failure counted when claimed: a delivered outcome
    # then changes nothing of its health, and its record skips the endpoint's row.
    healthy: bool
    # The endpoint takes its deliveries in commit order: its run is sent one request at a
    # time. A slow unordered endpoint's run may go out on several lanes (outbound.lanes).
    ordered: bool = True


def _due(now: datetime | BindParameter[Any]) -> Any:
    return or_(
        and_(d.c.status == DeliveryStatus.PENDING, d.c.next_attempt_at <= now),
        and_(d.c.status == DeliveryStatus.DELIVERING, d.c.lease_expires_at <= now),
    )


def _live(now: datetime) -> Any:
    return and_(d.c.status == DeliveryStatus.DELIVERING, d.c.lease_expires_at > now)


def _is_due(row: Any, now: datetime) -> bool:
    if row.status == DeliveryStatus.PENDING:
        return bool(row.next_attempt_at <= now)
    return row.lease_expires_at is not None and row.lease_expires_at <= now


def _candidates(conn: Connection, now: datetime, limit: int) -> list[str]:
    """Open endpoints with a due delivery and none in flight, least recently served first,
    locked (skipping those another dispatcher holds)."""
    query = (
        select(e.c.id)
        .where(
            or_(
                e.c.state == EndpointState.ENABLED,
                and_(e.c.state == EndpointState.PAUSED, e.c.paused_until <= now),
            ),
            or_(e.c.next_send_at.is_(None), e.c.next_send_at <= now),
            # Driven by the due index (status, next_attempt_at), not by each endpoint's
            # history: an endpoint's delivered rows are never scanned here.
            e.c.id.in_(select(d.c.endpoint_id).where(_due(now))),
            e.c.id.not_in(select(d.c.endpoint_id).where(_live(now))),
        )
        .order_by(func.coalesce(e.c.next_send_at, _EPOCH), e.c.id)
        .limit(limit)
    )
    name = conn.dialect.name
    if name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=e)
    elif name in ("mysql", "mariadb"):
        query = query.with_for_update(skip_locked=True)
    return [row.id for row in conn.execute(query)]


def _still_open(conn: Connection, ids: list[str], now: datetime) -> list[Any]:
    """The locked endpoints read afresh (a statement of its own sees what committed before
    the locks were granted), in the candidates' order: those still open, whose rate limit
    does not say wait, and with no delivery in flight (a claim that committed after the
    candidates were read)."""
    rows = conn.execute(
        select(
            e.c.id, e.c.ordered, e.c.rate_limit_per_s, e.c.url, e.c.state, e.c.paused_until,
            e.c.next_send_at, e.c.secret, e.c.previous_secret, e.c.previous_expires_at,
            e.c.consecutive_failures, e.c.failing_since,
        ).where(e.c.id.in_(ids))
    ).all()  # fmt: skip
    busy = set(
        conn.execute(select(d.c.endpoint_id).where(d.c.endpoint_id.in_(ids), _live(now))).scalars()
    )
    found = {row.id: row for row in rows if row.id not in busy and _open(row, now)}
    return [found[i] for i in ids if i in found]


def _open(row: Any, now: datetime) -> bool:
    if row.next_send_at is not None and row.next_send_at > now:
        return False
    if row.state == EndpointState.ENABLED:
        return True
    return bool(
        row.state == EndpointState.PAUSED
        and row.paused_until is not None
        and row.paused_until <= now
    )


def _limited(endpoint: Any) -> bool:
    return (endpoint.rate_limit_per_s or 0) > 0


def _healthy(endpoint: Any) -> bool:
    return bool(
        endpoint.state == EndpointState.ENABLED
        and not endpoint.consecutive_failures
        and endpoint.failing_since is None
    )


def _run_length(endpoint: Any, per_endpoint: int) -> int:
    """A half-open probe and a rate-limited endpoint get one delivery per claim."""
    if endpoint.state == EndpointState.PAUSED or _limited(endpoint):
        return 1
    return per_endpoint


def _runs(
    conn: Connection, endpoints: list[Any], now: datetime, per_endpoint: int
) -> dict[str, list[Any]]:
    """Each endpoint's run, read in one statement (a UNION ALL of one index-driven, limited
    select per endpoint): an unordered endpoint's oldest due deliveries; an ordered one's
    oldest undelivered ones, kept from the head up to the first that is not due."""
    if not endpoints:
        return {}
    params: dict[str, Any] = {"now": now}
    for i, ep in enumerate(endpoints):
        params[f"ep{i}"], params[f"lim{i}"] = ep.id, _run_length(ep, per_endpoint)
    query = _runs_query(tuple(bool(ep.ordered) for ep in endpoints))
    runs: dict[str, list[Any]] = {}
    for row in conn.execute(query, params):
        runs.setdefault(row.endpoint_id, []).append(row)
    ordered = {ep.id for ep in endpoints if ep.ordered}
    for endpoint_id, rows in runs.items():
        rows.sort(key=lambda r: r.id)
        if endpoint_id in ordered:
            head = 0
            while head < len(rows) and _is_due(rows[head], now):
                head += 1
            del rows[head:]
    return runs


@functools.lru_cache(maxsize=256)
def _runs_query(ordered: tuple[bool, ...]) -> Any:
    """The runs' statement for endpoints of this shape (which are ordered), with the
    endpoints, their run lengths and the time as bound parameters (`ep<i>`, `lim<i>`,
    `now`). Built once per shape: building and keying a UNION of up to 32 selects took
    about half of a claim's CPU when it was built afresh each time."""
    now = bindparam("now", type_=d.c.next_attempt_at.type)
    parts = []
    for i, is_ordered in enumerate(ordered):
        mine = d.c.endpoint_id == bindparam(f"ep{i}", type_=d.c.endpoint_id.type)
        which = d.c.status.in_(UNDELIVERED) if is_ordered else _due(now)
        limit = bindparam(f"lim{i}", type_=Integer)
        parts.append(select(*_COLUMNS).where(mine, which).order_by(d.c.id).limit(limit))
    if len(parts) == 1:
        return parts[0]
    # Each limited select as a subquery: SQLite allows no LIMIT in a compound's arm.
    return union_all(*(select(*p.subquery().c) for p in parts))


def _take(
    conn: Connection, ids: list[int], lease: str, expires: datetime, now: datetime
) -> set[int]:
    """Lease the deliveries `ids` (those still due); the ids taken."""
    if not ids:
        return set()
    taken = conn.execute(
        update(d)
        .where(d.c.id.in_(ids), _due(now))
        .values(status=DeliveryStatus.DELIVERING, lease_owner=lease, lease_expires_at=expires)
    ).rowcount
    if taken == len(ids):
        return set(ids)
    mine = select(d.c.id).where(d.c.id.in_(ids), d.c.lease_owner == lease)
    return set(conn.execute(mine).scalars())


def _served(conn: Connection, endpoints: list[Any], now: datetime) -> None:
    """Move each served endpoint's `next_send_at` on: by its rate limit's step, else to now
    (it goes to the back of the least-recently-served order)."""
    plain = [ep.id for ep in endpoints if not _limited(ep)]
    if plain:
        conn.execute(update(e).where(e.c.id.in_(plain)).values(next_send_at=now))
    for ep in endpoints:
        if _limited(ep):
            step = timedelta(seconds=1.0 / ep.rate_limit_per_s)
            conn.execute(update(e).where(e.c.id == ep.id).values(next_send_at=now + step))


def claim_due(
    conn: Connection,
    owner: str,
    now: datetime,
    limit: int,
    config: WebhookConfig,
    *,
    per_endpoint: int = 1,
) -> list[Claimed]:
    """Lease due deliveries of up to `limit` endpoints, a run of up to `per_endpoint` each
    (see the module docstring), in the caller's transaction; grouped by endpoint, each run in
    the order to send it. `owner` names the dispatcher (at most 40 characters are kept); the
    claim's lease owner adds a random suffix to it."""
    if limit <= 0 or per_endpoint <= 0:
        return []
    ids = _candidates(conn, now, limit)
    if not ids:
        return []
    endpoints = _still_open(conn, ids, now)
    runs = _runs(conn, endpoints, now, per_endpoint)
    lease = f"{owner[:40]}/{secrets.token_hex(8)}"
    expires = now + timedelta(seconds=config.lease_s)
    wanted = [row.id for rows in runs.values() for row in rows]
    taken = _take(conn, wanted, lease, expires, now)
    claimed: list[Claimed] = []
    served, after_gap = [], []
    for ep in endpoints:
        run = runs.get(ep.id, [])
        if ep.ordered:  # a gap would send a later one before an earlier one: stop there
            gap = next((i for i, r in enumerate(run) if r.id not in taken), len(run))
            after_gap += [r.id for r in run[gap:] if r.id in taken]
            rows = run[:gap]
        else:
            rows = [r for r in run if r.id in taken]
        if not rows:
            continue
        served.append(ep)
        tokens = signing_tokens(ep.secret, ep.previous_secret, ep.previous_expires_at, now)
        claimed.extend(
            Claimed(
                id=int(row.id),
                endpoint_id=ep.id,
                event_id=row.event_id,
                webhook_id=row.webhook_id,
                tenant_id=row.tenant_id,
                event_type=row.event_type,
                body=row.payload.encode(),
                attempt=int(row.attempts) + 1,
                url=ep.url,
                lease_owner=lease,
                lease_expires_at=expires,
                half_open=ep.state == EndpointState.PAUSED,
                secret_tokens=tokens,
                healthy=_healthy(ep),
                ordered=bool(ep.ordered),
            )
            for row in rows
        )
    _give_back(conn, after_gap, lease)
    _served(conn, served, now)
    return claimed


def release(conn: Connection, claims: Sequence[Claimed]) -> int:
    """Give back deliveries claimed but not sent (a run cut short): pending again, due as
    they were, their attempts not counted. Fenced on each lease; returns how many."""
    by_lease: dict[str, list[int]] = {}
    for c in claims:
        by_lease.setdefault(c.lease_owner, []).append(c.id)
    return sum(_give_back(conn, ids, lease) for lease, ids in by_lease.items())


def _give_back(conn: Connection, ids: list[int], lease: str) -> int:
    if not ids:
        return 0
    return int(
        conn.execute(
            update(d)
            .where(
                d.c.id.in_(ids),
                d.c.lease_owner == lease,
                d.c.status == DeliveryStatus.DELIVERING,
            )
            .values(status=DeliveryStatus.PENDING, lease_owner=None, lease_expires_at=None)
        ).rowcount
    )

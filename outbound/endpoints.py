"""The tenants' webhook endpoints (ADR 021): added, listed, disabled and enabled, their
secrets rotated, removed; and the keys an attempt signs with.

Every function works in the caller's transaction (`conn`): the caller commits. Secrets
are encrypted by a `SecretBox` bound to the endpoint id and decrypted only for the
signer (`signing_keys`) or once, at creation and rotation, for the user; an `Endpoint`
never carries one. Disabling or removing an endpoint cancels its pending deliveries
(their attempts stay in the log).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from secrets import token_urlsafe  # the standard library's, not outbound.secrets
from typing import Any

from sqlalchemy import Connection, Row, select

from domain.schema import tenants
from outbound.config import WebhookConfig
from outbound.endpoint_rules import (
    InvalidEndpoint,
    check_description,
    check_event_types,
    check_rate_limit,
    check_signing,
    check_url,
    signing_tokens,
)
from outbound.ports import Endpoint, EndpointState, SigningKey
from outbound.secrets import SecretBox, generate, signing_key
from outbox.schema_webhooks import webhook_deliveries_table as deliveries
from outbox.schema_webhooks import webhook_endpoints_table as endpoints

__all__ = [
    "EndpointChanged",
    "EndpointStatus",
    "UnknownEndpoint",
    "add",
    "disable",
    "enable",
    "get",
    "list_",
    "reencrypt",
    "remove",
    "rotate_secret",
    "signing_keys",
    "status",
]

ID_PREFIX = "ep_"
MAX_REASON = 500  # webhook_endpoints.disabled_reason
# A delivery not yet finished: disabling or removing its endpoint cancels it.
OPEN_DELIVERIES = ("pending", "delivering")


class UnknownEndpoint(InvalidEndpoint):
    """No endpoint has this id."""

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"no webhook endpoint with id {endpoint_id[:50]!r}")


class EndpointChanged(InvalidEndpoint):
    """Another writer changed the endpoint between our read and our write."""


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """An endpoint with its health and rotation, as `show` prints it (no secret)."""

    endpoint: Endpoint
    disabled_reason: str | None
    disabled_at: datetime | None
    consecutive_failures: int
    failing_since: datetime | None
    previous_secret_until: datetime | None  # both secrets sign until then
    created_at: datetime
    updated_at: datetime


def new_id() -> str:
    return ID_PREFIX + token_urlsafe(20)[:26]


def add(
    conn: Connection,
    box: SecretBox,
    *,
    tenant_id: str,
    url: str,
    event_types: Sequence[str],
    description: str | None,
    ordered: bool,
    rate_limit_per_s: float | None,
    signing: str,
    config: WebhookConfig,
    now: datetime,
) -> tuple[Endpoint, str]:
    """A new enabled endpoint, and its secret to show the user once (v1a: the public key)."""
    values: dict[str, Any] = {
        "url": check_url(url, config),
        "event_types": json.dumps(list(check_event_types(event_types, config))),
        "description": check_description(description),
        "rate_limit_per_s": check_rate_limit(rate_limit_per_s),
        "signing": check_signing(signing),
        "ordered": bool(ordered),
    }
    if conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id)).first() is None:
        raise InvalidEndpoint(f"tenant {tenant_id[:64]!r} does not exist")
    endpoint_id = new_id()
    stored, shown = generate(signing)
    conn.execute(
        endpoints.insert().values(
            id=endpoint_id,
            tenant_id=tenant_id,
            secret=box.encrypt(stored, aad=endpoint_id),
            state=EndpointState.ENABLED.value,
            consecutive_failures=0,
            created_at=now,
            updated_at=now,
            version=1,
            **values,
        )
    )
    return _endpoint(_row(conn, endpoint_id)), shown


def _endpoint(row: Row[Any]) -> Endpoint:
    return Endpoint(
        id=row.id,
        tenant_id=row.tenant_id,
        url=row.url,
        event_types=tuple(json.loads(row.event_types)),
        ordered=bool(row.ordered),
        rate_limit_per_s=row.rate_limit_per_s,
        signing=row.signing,
        state=EndpointState(row.state),
        paused_until=row.paused_until,
        description=row.description,
    )


_PUBLIC = [c for c in endpoints.c if c.name not in ("secret", "previous_secret")]


def _row(conn: Connection, endpoint_id: str) -> Row[Any]:
    row = conn.execute(select(*_PUBLIC).where(endpoints.c.id == endpoint_id)).first()
    if row is None:
        raise UnknownEndpoint(endpoint_id)
    return row


def get(conn: Connection, endpoint_id: str) -> Endpoint | None:
    row = conn.execute(select(*_PUBLIC).where(endpoints.c.id == endpoint_id)).first()
    return None if row is None else _endpoint(row)


def status(conn: Connection, endpoint_id: str, now: datetime) -> EndpointStatus | None:
    row = conn.execute(select(*_PUBLIC).where(endpoints.c.id == endpoint_id)).first()
    if row is None:
        return None
    until = row.previous_expires_at
    return EndpointStatus(
        endpoint=_endpoint(row),
        disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at,
        consecutive_failures=row.consecutive_failures,
        failing_since=row.failing_since,
        previous_secret_until=until if until is not None and until > now else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def list_(conn: Connection, tenant_id: str | None = None) -> list[Endpoint]:
    """Every endpoint (or one tenant's), by tenant, oldest first."""
    query = select(*_PUBLIC).order_by(endpoints.c.tenant_id, endpoints.c.created_at, endpoints.c.id)
    if tenant_id is not None:
        query = query.where(endpoints.c.tenant_id == tenant_id)
    return [_endpoint(row) for row in conn.execute(query)]


def _update(conn: Connection, endpoint_id: str, version: int, **values: Any) -> None:
    """Write `values` if nobody changed the endpoint since it was read at `version`."""
    done = conn.execute(
        endpoints.update()
        .where(endpoints.c.id == endpoint_id, endpoints.c.version == version)
        .values(version=version + 1, **values)
    )
    if done.rowcount != 1:
        raise EndpointChanged(f"endpoint {endpoint_id!r} changed meanwhile; look again and retry")


def _cancel_deliveries(conn: Connection, endpoint_id: str, reason: str) -> int:
    done = conn.execute(
        deliveries.update()
        .where(deliveries.c.endpoint_id == endpoint_id, deliveries.c.status.in_(OPEN_DELIVERIES))
        .values(
            status="cancelled", lease_owner=None, lease_expires_at=None, last_error=reason[:500]
        )
    )
    return int(done.rowcount)


def disable(conn: Connection, endpoint_id: str, reason: str, now: datetime) -> int:
    """Disable the endpoint with `reason`; returns how many open deliveries were cancelled."""
    if not reason.strip() or len(reason) > MAX_REASON:
        raise InvalidEndpoint(f"give a reason of 1 to {MAX_REASON} characters")
    row = _row(conn, endpoint_id)
    _update(
        conn,
        row.id,
        row.version,
        state=EndpointState.DISABLED.value,
        disabled_reason=reason.strip(),
        disabled_at=now,
        paused_until=None,
        updated_at=now,
    )
    return _cancel_deliveries(conn, endpoint_id, "endpoint disabled")


def enable(conn: Connection, endpoint_id: str, now: datetime) -> None:
    """Enable the endpoint again with a clean health (no pause, no failures counted).
    Deliveries cancelled when it was disabled stay cancelled (`resend` sends one again)."""
    row = _row(conn, endpoint_id)
    _update(
        conn,
        row.id,
        row.version,
        state=EndpointState.ENABLED.value,
        disabled_reason=None,
        disabled_at=None,
        paused_until=None,
        consecutive_failures=0,
        failing_since=None,
        updated_at=now,
    )


def rotate_secret(
    conn: Connection, box: SecretBox, endpoint_id: str, overlap_s: float, now: datetime
) -> str:
    """A new secret of the endpoint's scheme; the old one keeps signing for `overlap_s`
    (0: not at all). Returns the new secret to show once (v1a: its public key)."""
    if not 0 <= overlap_s <= 30 * 86400:
        raise InvalidEndpoint("the overlap is 0 to 30 days in seconds")
    row = _row(conn, endpoint_id)
    old = _secret(conn, box, endpoint_id)
    stored, shown = generate(row.signing)
    keep = overlap_s > 0
    _update(
        conn,
        row.id,
        row.version,
        secret=box.encrypt(stored, aad=endpoint_id),
        previous_secret=box.encrypt(old, aad=endpoint_id) if keep else None,
        previous_expires_at=now + timedelta(seconds=overlap_s) if keep else None,
        updated_at=now,
    )
    return shown


def _secret(conn: Connection, box: SecretBox, endpoint_id: str) -> str:
    token = conn.execute(select(endpoints.c.secret).where(endpoints.c.id == endpoint_id)).scalar()
    if token is None:
        raise UnknownEndpoint(endpoint_id)
    return box.decrypt(token, aad=endpoint_id)


def remove(conn: Connection, endpoint_id: str) -> int:
    """Delete the endpoint; its open deliveries are cancelled (attempts stay in the log).
    Returns how many deliveries were cancelled."""
    _row(conn, endpoint_id)
    cancelled = _cancel_deliveries(conn, endpoint_id, "endpoint removed")
    conn.execute(endpoints.delete().where(endpoints.c.id == endpoint_id))
    return cancelled


def signing_keys(
    conn: Connection, box: SecretBox, endpoint_id: str, now: datetime
) -> list[SigningKey]:
    """The keys an attempt signs with: the current one, then the previous one while the
    rotation's overlap lasts. UnknownEndpoint if the endpoint was removed."""
    row = conn.execute(
        select(
            endpoints.c.secret, endpoints.c.previous_secret, endpoints.c.previous_expires_at
        ).where(endpoints.c.id == endpoint_id)
    ).first()
    if row is None:
        raise UnknownEndpoint(endpoint_id)
    tokens = signing_tokens(row.secret, row.previous_secret, row.previous_expires_at, now)
    return [signing_key(box.decrypt(token, aad=endpoint_id)) for token in tokens]


def reencrypt(conn: Connection, box: SecretBox, now: datetime) -> int:
    """Encrypt every stored secret again under the ring's newest key (after a new master
    key was put first), so the older keys can be retired without rotating any endpoint's
    signing secret. Returns how many endpoints were rewritten; those already under the
    newest key are left alone."""
    rows = conn.execute(
        select(
            endpoints.c.id, endpoints.c.version, endpoints.c.secret, endpoints.c.previous_secret
        ).order_by(endpoints.c.id)
    ).all()
    done = 0
    for row in rows:
        tokens = [t for t in (row.secret, row.previous_secret) if t is not None]
        if all(box.kid_of(t) == box.newest for t in tokens):
            continue
        again = [box.encrypt(box.decrypt(t, aad=row.id), aad=row.id) for t in tokens]
        _update(
            conn,
            row.id,
            row.version,
            secret=again[0],
            previous_secret=again[1] if len(again) > 1 else None,
            updated_at=now,
        )
        done += 1
    return done

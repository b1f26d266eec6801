"""What an attempt's outcome does (ADR 021): to its delivery, to its endpoint's health, and
the endpoint's events, in the caller's transaction.

- delivered: the delivery is done; the endpoint's health is reset (no failures in a row,
  not failing since anything) and a paused endpoint is closed again (enabled);
- failed / throttled: the next try after `schedule_s[attempts]` +- `jitter` (throttled: at
  least the receiver's Retry-After, capped at `max_retry_after_s`); after the last try the
  delivery is `failed`. The endpoint counts one more failure in a row: at
  `breaker_failures` the breaker opens (paused until now + `breaker_cooldown_s`,
  `webhook_endpoint.paused`); a failed half-open probe pauses it again, with no second
  event. Failing with no success for `disable_after_s` disables it;
- gone (410): the endpoint is disabled ("410 Gone");
- refused (the SSRF policy): the delivery fails at once with the reason, no retry.

Disabling cancels the endpoint's undelivered deliveries and emits
`webhook_endpoint.disabled`. An event is appended on the endpoint's aggregate
("webhook_endpoint", its id) at the endpoint row's version, bumped, with its outbox row:
both commit with the outcome or neither does.

Everything is fenced on the claim's lease: an attempt whose lease was lost (expired and
claimed again) writes nothing, not even its attempt row.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, insert, select, update

from domain.event_store import event_row
from domain.events import RecordedEvent
from domain.routing import topic_for
from domain.schema import domain_events
from domain.unit_of_work import CommandContext
from outbound.claims import Claimed
from outbound.config import WebhookConfig
from outbound.deliveries import UNDELIVERED, DeliveryStatus
from outbound.events import ENDPOINT_AGGREGATE, WebhookEndpointDisabled, WebhookEndpointPaused
from outbound.ports import EndpointState, Outcome, SendResult
from outbound.quick_record import in_one_statement, is_quick, record_quick
from outbox.envelope import Envelope, canonical_json
from outbox.schema_webhooks import webhook_attempts_table as a
from outbox.schema_webhooks import webhook_deliveries_table as d
from outbox.schema_webhooks import webhook_endpoints_table as e
from outbox.writer import append

__all__ = ["GONE_REASON", "disable", "emit", "next_delay", "record"]

log = structlog.get_logger(__name__)

GONE_REASON = "410 Gone"
ACTOR = "webhooks-dispatcher"


def next_delay(
    config: WebhookConfig, attempts: int, result: SendResult, rng: random.Random
) -> float | None:
    """Seconds until the next try after `attempts` tries, or None: the schedule is over."""
    if attempts >= len(config.schedule_s):
        return None
    base = config.schedule_s[attempts]
    delay = base * (1 + rng.uniform(-config.jitter, config.jitter)) if config.jitter else base
    if result.outcome == Outcome.THROTTLED and result.retry_after_s is not None:
        delay = max(delay, min(max(result.retry_after_s, 0.0), config.max_retry_after_s))
    return max(delay, 0.0)


def record(  # noqa: PLR0917 - the claim, its result and what decides the next step
    conn: Connection,
    claimed: Claimed,
    result: SendResult,
    config: WebhookConfig,
    now: datetime,
    rng: random.Random,
    *,
    shards: int,
) -> bool:
    """Write the attempt and its consequences; False (nothing written) if the lease was
    lost. `shards`: the outbox's shard count (OUTBOX_SHARDS) for the endpoint's events.
    When `quick_record.in_one_statement` says so, that is one statement, which may run in
    autocommit."""
    if in_one_statement(conn.dialect.name, claimed, result):
        return record_quick(conn, claimed, result, now)
    outcome = result.outcome
    values: dict[str, Any] = {
        "attempts": claimed.attempt,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_status_code": result.status_code,
        "last_error": _error(result),
    }
    if outcome == Outcome.DELIVERED:
        values.update(status=DeliveryStatus.DELIVERED, delivered_at=now, last_error=None)
    elif outcome == Outcome.GONE:
        values.update(status=DeliveryStatus.CANCELLED, last_error=GONE_REASON)
    elif outcome == Outcome.REFUSED:
        values.update(status=DeliveryStatus.FAILED)
    else:
        delay = next_delay(config, claimed.attempt, result, rng)
        if delay is None:
            values.update(status=DeliveryStatus.FAILED)
        else:
            values.update(
                status=DeliveryStatus.PENDING, next_attempt_at=now + timedelta(seconds=delay)
            )
    # The endpoint's row first, as the claim and the endpoints' own commands take it: one
    # lock order (endpoint, then delivery), so no deadlock with them. Not at all when the
    # delivery went through to an endpoint healthy at the claim: nothing of its health
    # changes (its run is the only one sending to it, and stops at its first failure), and
    # a disable or a removal meanwhile has cancelled the delivery, which the fence sees.
    # On PostgreSQL this case is one statement (outbound.quick_record, above).
    quick = is_quick(claimed, result)
    endpoint = None if quick else _locked(conn, claimed.endpoint_id)
    fenced = conn.execute(
        update(d)
        .where(
            d.c.id == claimed.id,
            d.c.lease_owner == claimed.lease_owner,
            d.c.status == DeliveryStatus.DELIVERING,
        )
        .values(**values)
    ).rowcount
    if fenced != 1:
        log.warning("webhook_lease_lost", delivery_id=claimed.id, endpoint_id=claimed.endpoint_id)
        return False
    conn.execute(
        insert(a).values(
            delivery_id=claimed.id,
            endpoint_id=claimed.endpoint_id,
            event_id=claimed.event_id,
            webhook_id=claimed.webhook_id,
            attempt=claimed.attempt,
            at=now,
            duration_ms=max(0, int(result.duration_ms)),
            outcome=str(outcome),
            status_code=result.status_code,
            error=(result.error or None) and result.error[:200],
            response_excerpt=result.excerpt,
        )
    )
    if quick or endpoint is None or endpoint.state == EndpointState.DISABLED:
        return True  # healthy, or removed or disabled meanwhile: nothing more to write
    if outcome == Outcome.DELIVERED:
        _healthy(conn, endpoint, now)
    elif outcome == Outcome.GONE:
        disable(conn, claimed.endpoint_id, GONE_REASON, now, shards=shards)
    elif outcome in (Outcome.FAILED, Outcome.THROTTLED):
        _failing(conn, endpoint, config, now, shards)
    return True


def _error(result: SendResult) -> str | None:
    if result.outcome == Outcome.REFUSED:  # the policy's reason: what the operator must fix
        return f"refused: {result.excerpt or result.error or 'destination not allowed'}"[:500]
    if result.error:
        return result.error[:500]
    if result.status_code is not None and result.outcome != Outcome.DELIVERED:
        return f"HTTP {result.status_code}"
    return None


def _locked(conn: Connection, endpoint_id: str) -> Any:
    return conn.execute(
        select(
            e.c.id,
            e.c.tenant_id,
            e.c.state,
            e.c.consecutive_failures,
            e.c.failing_since,
            e.c.version,
        )
        .where(e.c.id == endpoint_id)
        .with_for_update()
    ).first()


def _healthy(conn: Connection, endpoint: Any, now: datetime) -> None:
    values: dict[str, Any] = {"consecutive_failures": 0, "failing_since": None}
    if endpoint.state == EndpointState.PAUSED:  # the half-open probe went through
        values.update(state=EndpointState.ENABLED, paused_until=None, updated_at=now)
    elif not endpoint.consecutive_failures and endpoint.failing_since is None:
        return  # healthy already: no write on the common path
    conn.execute(update(e).where(e.c.id == endpoint.id).values(**values))


def _failing(
    conn: Connection, endpoint: Any, config: WebhookConfig, now: datetime, shards: int
) -> None:
    endpoint_id = endpoint.id
    failures = int(endpoint.consecutive_failures) + 1
    since = endpoint.failing_since or now
    if (now - since).total_seconds() >= config.disable_after_s:
        days = config.disable_after_s / 86400
        reason = f"failing since {since.isoformat()} ({days:g} days)"
        disable(conn, endpoint_id, reason, now, shards=shards, failures=failures)
        return
    values: dict[str, Any] = {"consecutive_failures": failures, "failing_since": since}
    if failures >= config.breaker_failures:
        until = now + timedelta(seconds=config.breaker_cooldown_s)
        values.update(state=EndpointState.PAUSED, paused_until=until, updated_at=now)
        if endpoint.state == EndpointState.ENABLED:
            version = int(endpoint.version) + 1
            values["version"] = version
            paused = WebhookEndpointPaused(
                tenant_id=endpoint.tenant_id,
                endpoint_id=endpoint_id,
                failures=failures,
                until=until,
            )
            emit(conn, paused, version=version, now=now, shards=shards)
            log.warning("webhook_endpoint_paused", endpoint_id=endpoint_id, failures=failures)
    conn.execute(update(e).where(e.c.id == endpoint_id).values(**values))


def disable(
    conn: Connection,
    endpoint_id: str,
    reason: str,
    now: datetime,
    *,
    shards: int,
    failures: int | None = None,
) -> bool:
    """Disable the endpoint with `reason`, cancel its undelivered deliveries and emit
    `webhook_endpoint.disabled`; False if it was disabled already (nothing written)."""
    endpoint = _locked(conn, endpoint_id)
    if endpoint is None or endpoint.state == EndpointState.DISABLED:
        return False
    version = int(endpoint.version) + 1
    values: dict[str, Any] = {
        "state": EndpointState.DISABLED,
        "disabled_reason": reason[:500],
        "disabled_at": now,
        "paused_until": None,
        "updated_at": now,
        "version": version,
    }
    if failures is not None:
        values["consecutive_failures"] = failures
    conn.execute(update(e).where(e.c.id == endpoint_id).values(**values))
    cancelled = conn.execute(
        update(d)
        .where(d.c.endpoint_id == endpoint_id, d.c.status.in_(UNDELIVERED))
        .values(status=DeliveryStatus.CANCELLED, lease_owner=None, lease_expires_at=None)
    ).rowcount
    event = WebhookEndpointDisabled(
        tenant_id=endpoint.tenant_id, endpoint_id=endpoint_id, reason=reason[:500]
    )
    emit(conn, event, version=version, now=now, shards=shards)
    log.warning(
        "webhook_endpoint_disabled", endpoint_id=endpoint_id, reason=reason, cancelled=cancelled
    )
    return True


def emit(
    conn: Connection,
    event: WebhookEndpointPaused | WebhookEndpointDisabled,
    *,
    version: int,
    now: datetime,
    shards: int,
) -> str:
    """Append an endpoint's event to `domain_events` and its outbox row, in the caller's
    transaction (as the unit of work does for an aggregate); returns its event id."""
    endpoint_id, tenant_id = event.endpoint_id, event.tenant_id
    metadata = CommandContext(tenant_id=tenant_id, actor=ACTOR).metadata()
    rec = RecordedEvent(
        event_id=str(uuid.uuid4()),
        aggregate_type=ENDPOINT_AGGREGATE,
        aggregate_id=endpoint_id,
        version=version,
        event=event,
        occurred_at=now,
        metadata=metadata,
        payload_json=canonical_json(event.model_dump(mode="json")),
    )
    conn.execute(insert(domain_events).values(**event_row(rec, canonical_json(metadata))))
    headers = {
        **metadata,
        "aggregate_type": ENDPOINT_AGGREGATE,
        "aggregate_version": str(version),
        "schema_version": str(event.SCHEMA_VERSION),
    }
    envelope = Envelope(
        event_id=rec.event_id,
        topic=topic_for(ENDPOINT_AGGREGATE),
        key=endpoint_id,
        type=event.TYPE,
        payload=rec.payload_json,
        occurred_at=now,
        headers=headers,
    )
    append(conn, [envelope], shards=shards, now=now)
    return rec.event_id

"""The endpoints' store (outbound.endpoints) on SQLite, PostgreSQL and MariaDB: add, list,
show, disable (cancelling open deliveries), enable, rotate with an overlap (both keys sign,
then only the new one), remove (attempts stay); the secret is never stored in the clear
and cannot be moved to another endpoint's row."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from standardwebhooks import Webhook

from domain import CommandBus
from outbound import endpoints as store
from outbound.config import WebhookConfig
from outbound.deliveries import subscribed
from outbound.endpoint_rules import InvalidEndpoint
from outbound.ports import EndpointState
from outbound.secrets import BadSecretToken, SecretBox
from outbox.schema_webhooks import webhook_attempts_table as attempts
from outbox.schema_webhooks import webhook_deliveries_table as deliveries
from outbox.schema_webhooks import webhook_endpoints_table as endpoints
from tests.scenario import ensure_tenant

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
CONFIG = WebhookConfig()
BOX_KEY = os.urandom(32)
BOX = SecretBox([("k1", BOX_KEY)])


@pytest.fixture
def tenant(bus: CommandBus) -> str:
    ensure_tenant(bus, "t-1")
    ensure_tenant(bus, "t-2")
    return "t-1"


def _add(engine: Engine, tenant_id: str = "t-1", **fields: Any) -> tuple[str, str]:
    values: dict[str, Any] = {
        "url": "https://hooks.example/in",
        "event_types": ["order.*"],
        "description": None,
        "ordered": False,
        "rate_limit_per_s": None,
        "signing": "v1",
        **fields,
    }
    with engine.begin() as conn:
        endpoint, shown = store.add(
            conn,
            BOX,
            tenant_id=tenant_id,
            config=CONFIG,
            now=NOW,
            **values,
        )
    return endpoint.id, shown


def _delivery(engine: Engine, endpoint_id: str, event_id: str, status: str) -> int:
    with engine.begin() as conn:
        done = conn.execute(
            deliveries.insert().values(
                endpoint_id=endpoint_id,
                event_id=event_id,
                webhook_id=f"msg_{event_id}",
                tenant_id="t-1",
                event_type="order.paid",
                payload="{}",
                status=status,
                attempts=1,
                next_attempt_at=NOW,
                created_at=NOW,
            )
        )
        return int(done.inserted_primary_key[0])


def _statuses(engine: Engine, endpoint_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.event_id, deliveries.c.status).where(
                deliveries.c.endpoint_id == endpoint_id
            )
        )
        return {row.event_id: row.status for row in rows}


def _keys(engine: Engine, endpoint_id: str, now: datetime) -> list[bytes]:
    with engine.connect() as conn:
        return [k.material for k in store.signing_keys(conn, BOX, endpoint_id, now)]


def _raw(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def test_an_endpoint_is_added_listed_and_shown_without_its_secret(
    engine: Engine, tenant: str
) -> None:
    first, secret = _add(
        engine,
        url="https://Bücher.example/in?x=1",
        event_types=["order.*", "*"],
        description="ERP",
        ordered=True,
        rate_limit_per_s=2.5,
    )
    second, _ = _add(engine, "t-2", signing="v1a")
    with engine.connect() as conn:
        endpoint = store.get(conn, first)
        assert endpoint is not None
        assert endpoint.id.startswith("ep_") and len(endpoint.id) == 29
        assert endpoint.url == "https://xn--bcher-kva.example/in?x=1"
        assert endpoint.event_types == ("order.*", "*")
        assert (endpoint.ordered, endpoint.rate_limit_per_s) == (True, 2.5)
        assert (endpoint.state, endpoint.signing, endpoint.description) == ("enabled", "v1", "ERP")
        assert [e.id for e in store.list_(conn)] == [first, second]
        assert [e.id for e in store.list_(conn, "t-2")] == [second]
        assert store.get(conn, "ep_missing") is None
        shown = store.status(conn, first, NOW)
        assert shown is not None and shown.previous_secret_until is None
        assert shown.consecutive_failures == 0 and shown.created_at == NOW
        stored = conn.execute(select(endpoints.c.secret).where(endpoints.c.id == first)).scalar()
    assert secret.startswith("whsec_") and secret not in repr(endpoint)
    assert stored.startswith("gcm1:k1:") and secret.removeprefix("whsec_") not in stored
    assert _keys(engine, first, NOW) == [_raw(secret)]


def test_the_signing_key_verifies_with_the_secret_the_user_was_shown(
    engine: Engine, tenant: str
) -> None:
    endpoint_id, secret = _add(engine)
    key = _keys(engine, endpoint_id, NOW)[0]
    assert Webhook(secret).sign("msg_1", NOW, b"{}") == Webhook(
        "whsec_" + base64.b64encode(key).decode()
    ).sign("msg_1", NOW, b"{}")


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"url": "http://hooks.example/"}, "scheme must be https"),
        ({"url": "https://u@hooks.example/"}, "user information"),
        ({"event_types": []}, "at least one"),
        ({"event_types": ["order.**"]}, "no event type"),
        ({"rate_limit_per_s": 0}, "rate limit"),
        ({"signing": "v2"}, "v1 or v1a"),
    ],
)
def test_a_bad_endpoint_is_refused_and_nothing_is_written(
    engine: Engine, tenant: str, fields: dict[str, object], says: str
) -> None:
    with pytest.raises(InvalidEndpoint, match=says):
        _add(engine, **fields)
    with pytest.raises(InvalidEndpoint, match="tenant 'nobody' does not exist"):
        _add(engine, "nobody")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(endpoints)).scalar() == 0


def test_disable_cancels_open_deliveries_and_enable_clears_the_health(
    engine: Engine, tenant: str
) -> None:
    endpoint_id, _ = _add(engine)
    other_id, _ = _add(engine)
    for event_id, status in [
        ("e1", "pending"),
        ("e2", "delivering"),
        ("e3", "delivered"),
        ("e4", "failed"),
    ]:
        _delivery(engine, endpoint_id, event_id, status)
    _delivery(engine, other_id, "e1", "pending")
    with engine.begin() as conn:
        conn.execute(
            endpoints.update()
            .where(endpoints.c.id == endpoint_id)
            .values(state="paused", paused_until=NOW, consecutive_failures=7, failing_since=NOW)
        )
        assert store.disable(conn, endpoint_id, "tenant asked", NOW) == 2
    assert _statuses(engine, endpoint_id) == {
        "e1": "cancelled",
        "e2": "cancelled",
        "e3": "delivered",
        "e4": "failed",
    }
    assert _statuses(engine, other_id) == {"e1": "pending"}
    with engine.connect() as conn:
        shown = store.status(conn, endpoint_id, NOW)
    assert shown is not None and shown.endpoint.state is EndpointState.DISABLED
    assert (shown.disabled_reason, shown.disabled_at) == ("tenant asked", NOW)
    later = NOW + timedelta(hours=1)
    with engine.begin() as conn:
        store.enable(conn, endpoint_id, later)
        shown = store.status(conn, endpoint_id, later)
    assert shown is not None and shown.endpoint.state is EndpointState.ENABLED
    assert shown.endpoint.paused_until is None and shown.disabled_reason is None
    assert (shown.consecutive_failures, shown.failing_since) == (0, None)
    assert shown.updated_at == later
    assert _statuses(engine, endpoint_id)["e1"] == "cancelled"  # enable resends nothing


def test_a_rotation_signs_with_both_secrets_for_the_overlap_then_only_the_new(
    engine: Engine, tenant: str
) -> None:
    endpoint_id, old = _add(engine)
    with engine.begin() as conn:
        new = store.rotate_secret(conn, BOX, endpoint_id, 3600, NOW)
    assert new != old and new.startswith("whsec_")
    assert _keys(engine, endpoint_id, NOW) == [_raw(new), _raw(old)]
    assert _keys(engine, endpoint_id, NOW + timedelta(seconds=3599)) == [_raw(new), _raw(old)]
    assert _keys(engine, endpoint_id, NOW + timedelta(seconds=3600)) == [_raw(new)]
    with engine.connect() as conn:
        shown = store.status(conn, endpoint_id, NOW)
    assert shown is not None and shown.previous_secret_until == NOW + timedelta(hours=1)
    with engine.begin() as conn:  # no overlap: the old secret stops signing at once
        newest = store.rotate_secret(conn, BOX, endpoint_id, 0, NOW)
    assert _keys(engine, endpoint_id, NOW) == [_raw(newest)]


def test_a_v1a_rotation_keeps_its_scheme(engine: Engine, tenant: str) -> None:
    endpoint_id, public = _add(engine, signing="v1a")
    with engine.begin() as conn:
        again = store.rotate_secret(conn, BOX, endpoint_id, 60, NOW)
    assert public.startswith("whpk_") and again.startswith("whpk_") and again != public
    with engine.connect() as conn:
        keys = store.signing_keys(conn, BOX, endpoint_id, NOW)
    assert [k.scheme for k in keys] == ["v1a", "v1a"]


def test_remove_deletes_the_endpoint_cancels_its_deliveries_and_keeps_attempts(
    engine: Engine, tenant: str
) -> None:
    endpoint_id, _ = _add(engine)
    delivery = _delivery(engine, endpoint_id, "e1", "pending")
    _delivery(engine, endpoint_id, "e2", "delivered")
    with engine.begin() as conn:
        conn.execute(
            attempts.insert().values(
                delivery_id=delivery,
                endpoint_id=endpoint_id,
                event_id="e1",
                webhook_id="msg_e1",
                attempt=1,
                at=NOW,
                duration_ms=12,
                outcome="failed",
                status_code=500,
            )
        )
        assert store.remove(conn, endpoint_id) == 1
    with engine.connect() as conn:
        assert store.get(conn, endpoint_id) is None
        kept = conn.execute(select(func.count()).select_from(attempts)).scalar()
    assert kept == 1
    assert _statuses(engine, endpoint_id) == {"e1": "cancelled", "e2": "delivered"}
    for act in (
        lambda conn: store.remove(conn, endpoint_id),
        lambda conn: store.disable(conn, endpoint_id, "x", NOW),
        lambda conn: store.enable(conn, endpoint_id, NOW),
        lambda conn: store.rotate_secret(conn, BOX, endpoint_id, 60, NOW),
        lambda conn: store.signing_keys(conn, BOX, endpoint_id, NOW),
    ):
        with engine.begin() as conn, pytest.raises(store.UnknownEndpoint, match=endpoint_id):
            act(conn)


def test_a_secret_copied_to_another_endpoint_does_not_decrypt(engine: Engine, tenant: str) -> None:
    first, _ = _add(engine)
    second, _ = _add(engine)
    with engine.begin() as conn:
        token = conn.execute(select(endpoints.c.secret).where(endpoints.c.id == first)).scalar()
        conn.execute(endpoints.update().where(endpoints.c.id == second).values(secret=token))
    with engine.connect() as conn, pytest.raises(BadSecretToken, match="another endpoint"):
        store.signing_keys(conn, BOX, second, NOW)


def test_subscribers_are_the_tenants_live_endpoints_taking_the_type(
    engine: Engine, tenant: str
) -> None:
    orders, _ = _add(engine, event_types=["order.*"])
    paid, _ = _add(engine, event_types=["order.paid"])
    every, _ = _add(engine, event_types=["*"])
    _add(engine, "t-2", event_types=["*"])
    off, _ = _add(engine, event_types=["*"])
    with engine.begin() as conn:
        store.disable(conn, off, "off", NOW)
        conn.execute(endpoints.update().where(endpoints.c.id == every).values(state="paused"))
        found = subscribed(conn, "t-1", "order.paid", CONFIG)
        placed = subscribed(conn, "t-1", "order.placed", CONFIG)
        raw = subscribed(conn, "t-1", "payment.webhook_received", CONFIG)
    assert {e.id for e in found} == {orders, paid, every}
    assert {e.id for e in placed} == {orders, every}
    assert raw == []


def test_reencrypt_moves_every_secret_to_the_newest_key_and_keeps_the_secrets(
    engine: Engine, tenant: str
) -> None:
    rotated, _ = _add(engine)
    plain, _ = _add(engine, signing="v1a")
    with engine.begin() as conn:
        store.rotate_secret(conn, BOX, rotated, 3600, NOW)
    before = {e: _keys(engine, e, NOW) for e in (rotated, plain)}
    newest = os.urandom(32)
    ring = SecretBox([("k2", newest), ("k1", BOX_KEY)])
    with engine.begin() as conn:
        assert store.reencrypt(conn, ring, NOW) == 2
        assert store.reencrypt(conn, ring, NOW) == 0  # nothing left under k1
    retired = SecretBox([("k2", newest)])
    with engine.connect() as conn:
        after = {
            e: [k.material for k in store.signing_keys(conn, retired, e, NOW)]
            for e in (rotated, plain)
        }
        tokens = conn.execute(select(endpoints.c.secret, endpoints.c.previous_secret)).all()
    assert after == before and len(after[rotated]) == 2
    assert all(t.startswith("gcm1:k2:") for row in tokens for t in row if t is not None)


def test_a_write_over_a_stale_read_is_refused(engine: Engine, tenant: str) -> None:
    endpoint_id, _ = _add(engine)
    with engine.begin() as conn:
        store.enable(conn, endpoint_id, NOW)  # version 1 -> 2
        with pytest.raises(store.EndpointChanged, match="changed meanwhile"):
            store._update(conn, endpoint_id, 1, description="stale")

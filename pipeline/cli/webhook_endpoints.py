"""`outbox webhooks endpoints add|list|show|disable|enable|rotate-secret|remove|reencrypt`
(ADR 021).

A signing secret is printed only when it is made, by `add` and by `rotate-secret`, with a
warning that it is not shown again. `list` and `show` print neither a secret nor its
ciphertext. Every change is written with its audit row in one transaction (`outbox audit`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

import click
from rich.table import Table
from sqlalchemy import Connection

from outbound import endpoints as store
from outbound.endpoint_rules import MAX_RATE_LIMIT_PER_S, InvalidEndpoint
from outbound.ports import Endpoint
from outbound.secrets import SCHEMES, SecretError, UnknownKey
from outbox.audit import record
from outbox.types import utcnow
from pipeline.cli.clikit import (
    EXIT_CODES_HELP,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_USAGE,
    NAME,
    CliExit,
    FiniteFloat,
    TextType,
    cell,
    dump_json,
    engine_for,
    err,
    guarded,
    json_option,
    out,
    settings,
    yes_option,
)
from pipeline.cli.opskit import acted_options, actor_of, confirm, parse_duration, refuse
from pipeline.settings_webhooks import secret_box, webhook_config

__all__ = ["endpoints"]

F = TypeVar("F", bound=Callable[..., Any])
ENDPOINT_ID = TextType(40)
TENANT = TextType(64)
ONCE = "Store it now: it is not shown again (`rotate-secret` makes a new one)."


def _translated(fn: F) -> F:
    """The store's refusals as one line and an exit code (inside `guarded`)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except store.EndpointChanged as exc:
            raise CliExit(EXIT_FAILED, str(exc)) from exc
        except InvalidEndpoint as exc:
            raise CliExit(EXIT_USAGE, str(exc)) from exc
        except UnknownKey as exc:  # WEBHOOK_ENCRYPTION_KEYS lost a key id
            raise CliExit(EXIT_CONFIG, str(exc)) from exc
        except SecretError as exc:
            raise CliExit(EXIT_FAILED, str(exc)) from exc

    return wrapper  # type: ignore[return-value]


@click.group("endpoints", epilog=EXIT_CODES_HELP)
def endpoints() -> None:
    """The tenants' webhook endpoints: URL, subscribed event types, state, signing secret."""


def _as_dict(endpoint: Endpoint) -> dict[str, Any]:
    return dataclasses.asdict(endpoint)


def _audit(
    conn: Connection,
    action: str,
    endpoint_id: str,
    actor: str | None,
    reason: str | None,
    **details: Any,
) -> None:
    record(
        conn,
        at=utcnow(),
        actor=actor_of(actor),
        action=f"webhook_endpoint_{action}",
        target=f"webhook_endpoint:{endpoint_id}",
        reason=reason,
        details=details,
    )


def _show_secret(endpoint: Endpoint, shown: str, as_json: bool, headline: str) -> None:
    """The one place a secret is printed: stdout, never a log; the warning on stderr."""
    name = "public_key" if endpoint.signing == "v1a" else "secret"
    if as_json:
        dump_json({"endpoint": _as_dict(endpoint), name: shown, "shown_once": True})
    else:
        out.print(headline, highlight=False, markup=False)
        label = "public key (v1a, ed25519)" if name == "public_key" else "signing secret (v1)"
        click.echo(f"{label}: {shown}")
    if name == "secret":
        err.print(f"[yellow]warning:[/yellow] this is the endpoint's signing secret. {ONCE}")


@endpoints.command("add")
@click.option("--tenant", "tenant_id", required=True, type=TENANT, help="Tenant id.")
@click.option("--url", required=True, type=TextType(100_000), help="https URL to POST to.")
@click.option(
    "--event",
    "events",
    required=True,
    multiple=True,
    type=NAME,
    help="Event type: exact (order.paid), a prefix (order.*) or *; repeatable.",
)
@click.option("--description", type=TextType(500), default=None, help="What it is for.")
@click.option(
    "--ordered", is_flag=True, help="Deliver in commit order (one failing holds the rest)."
)
@click.option(
    "--rate-limit",
    type=FiniteFloat(min=0, min_open=True, max=MAX_RATE_LIMIT_PER_S),
    default=None,
    help="Deliveries per second at most (none: no limit).",
)
@click.option(
    "--signing",
    type=click.Choice(SCHEMES),
    default="v1",
    show_default=True,
    help="v1: HMAC-SHA256 (whsec_); v1a: ed25519 (the receiver gets whpk_).",
)
@click.option("--actor", type=TextType(128), default=None, help="Who acts (default: the OS user).")
@json_option
@guarded
@_translated
def endpoints_add(  # noqa: PLR0917 - click passes each option positionally
    tenant_id: str,
    url: str,
    events: tuple[str, ...],
    description: str | None,
    ordered: bool,
    rate_limit: float | None,
    signing: str,
    actor: str | None,
    as_json: bool,
) -> None:
    """Add an endpoint; prints its signing secret (v1a: public key) this once."""
    loaded = settings()
    box = secret_box(loaded)
    with engine_for(loaded).begin() as conn:
        endpoint, shown = store.add(
            conn,
            box,
            tenant_id=tenant_id,
            url=url,
            event_types=events,
            description=description,
            ordered=ordered,
            rate_limit_per_s=rate_limit,
            signing=signing,
            config=webhook_config(loaded),
            now=utcnow(),
        )
        _audit(conn, "add", endpoint.id, actor, None, tenant=tenant_id, signing=signing)
    headline = f"endpoint {endpoint.id} added for tenant {endpoint.tenant_id}"
    _show_secret(endpoint, shown, as_json, headline)


@endpoints.command("list")
@click.option("--tenant", "tenant_id", type=TENANT, default=None, help="Only this tenant's.")
@json_option
@guarded
@_translated
def endpoints_list(tenant_id: str | None, as_json: bool) -> None:
    """Endpoints by tenant, oldest first (no secrets)."""
    with engine_for(settings()).connect() as conn:
        found = store.list_(conn, tenant_id)
    if as_json:
        dump_json([_as_dict(e) for e in found], lines=True)
        return
    table = Table(title="webhook endpoints")
    for name in ("id", "tenant", "state", "url", "events", "ordered", "rate/s", "signing"):
        table.add_column(name, overflow="fold")
    for e in found:
        table.add_row(
            cell(e.id),
            cell(e.tenant_id),
            e.state.value,
            cell(e.url),
            cell(", ".join(e.event_types)),
            "yes" if e.ordered else "no",
            "" if e.rate_limit_per_s is None else f"{e.rate_limit_per_s:g}",
            e.signing,
        )
    out.print(table)


@endpoints.command("show")
@click.argument("endpoint_id", type=ENDPOINT_ID)
@json_option
@guarded
@_translated
def endpoints_show(endpoint_id: str, as_json: bool) -> None:
    """One endpoint: its fields, state, health and rotation (no secret)."""
    with engine_for(settings()).connect() as conn:
        found = store.status(conn, endpoint_id, utcnow())
    if found is None:
        raise store.UnknownEndpoint(endpoint_id)
    view = {**_as_dict(found.endpoint), **dataclasses.asdict(found)}
    del view["endpoint"]  # its fields are the view's first ones
    if as_json:
        dump_json(view)
        return
    table = Table(title=f"webhook endpoint {endpoint_id}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for name, value in view.items():
        table.add_row(name, cell(_text(value)))
    out.print(table)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


@endpoints.command("disable")
@click.argument("endpoint_id", type=ENDPOINT_ID)
@acted_options
@guarded
@_translated
def endpoints_disable(
    endpoint_id: str, actor: str | None, reason: str | None, as_json: bool
) -> None:
    """Disable an endpoint (--reason required); its pending deliveries are cancelled."""
    if not reason or not reason.strip():
        raise refuse("--reason: say why the endpoint is disabled (the tenant may read it)")
    with engine_for(settings()).begin() as conn:
        cancelled = store.disable(conn, endpoint_id, reason[:500], utcnow())
        _audit(conn, "disable", endpoint_id, actor, reason, cancelled=cancelled)
    if as_json:
        dump_json({"id": endpoint_id, "state": "disabled", "cancelled_deliveries": cancelled})
        return
    out.print(
        f"endpoint {endpoint_id} disabled; {cancelled} pending delivery(ies) cancelled",
        highlight=False,
        markup=False,
    )


@endpoints.command("enable")
@click.argument("endpoint_id", type=ENDPOINT_ID)
@acted_options
@guarded
@_translated
def endpoints_enable(
    endpoint_id: str, actor: str | None, reason: str | None, as_json: bool
) -> None:
    """Enable an endpoint again, its health cleared (no pause, no failures counted)."""
    with engine_for(settings()).begin() as conn:
        store.enable(conn, endpoint_id, utcnow())
        _audit(conn, "enable", endpoint_id, actor, reason)
    if as_json:
        dump_json({"id": endpoint_id, "state": "enabled"})
        return
    out.print(f"endpoint {endpoint_id} enabled", highlight=False, markup=False)


@endpoints.command("rotate-secret")
@click.argument("endpoint_id", type=ENDPOINT_ID)
@click.option(
    "--overlap",
    default=None,
    help="How long the old secret still signs "
    "(90s, 2h, 1d; 0: not at all). Default WEBHOOK_SECRET_OVERLAP_S.",
)
@acted_options
@guarded
@_translated
def endpoints_rotate(
    endpoint_id: str, overlap: str | None, actor: str | None, reason: str | None, as_json: bool
) -> None:
    """A new signing secret, printed this once; the old one signs too during the overlap."""
    loaded = settings()
    box = secret_box(loaded)
    seconds = (
        loaded.webhook_secret_overlap_s
        if overlap is None
        else parse_duration("--overlap", overlap).total_seconds()
    )
    with engine_for(loaded).begin() as conn:
        endpoint = store.get(conn, endpoint_id)
        if endpoint is None:
            raise store.UnknownEndpoint(endpoint_id)
        shown = store.rotate_secret(conn, box, endpoint_id, seconds, utcnow())
        _audit(conn, "rotate_secret", endpoint_id, actor, reason, overlap_s=seconds)
    old = f"the old one signs {seconds:g} s more" if seconds else "the old one no longer signs"
    headline = f"endpoint {endpoint_id} has a new secret; {old}"
    _show_secret(endpoint, shown, as_json, headline)


@endpoints.command("remove")
@click.argument("endpoint_id", type=ENDPOINT_ID)
@yes_option
@acted_options
@guarded
@_translated
def endpoints_remove(
    endpoint_id: str, yes: bool, actor: str | None, reason: str | None, as_json: bool
) -> None:
    """Delete an endpoint; its pending deliveries are cancelled, its attempts stay."""
    engine = engine_for(settings())
    with engine.connect() as conn:
        if store.get(conn, endpoint_id) is None:
            raise store.UnknownEndpoint(endpoint_id)
    confirm(yes, f"Remove webhook endpoint {endpoint_id}?")
    with engine.begin() as conn:
        cancelled = store.remove(conn, endpoint_id)
        _audit(conn, "remove", endpoint_id, actor, reason, cancelled=cancelled)
    if as_json:
        dump_json({"id": endpoint_id, "removed": True, "cancelled_deliveries": cancelled})
        return
    out.print(
        f"endpoint {endpoint_id} removed; {cancelled} pending delivery(ies) cancelled",
        highlight=False,
        markup=False,
    )


@endpoints.command("reencrypt")
@acted_options
@guarded
@_translated
def endpoints_reencrypt(actor: str | None, reason: str | None, as_json: bool) -> None:
    """Encrypt every stored secret again under the newest WEBHOOK_ENCRYPTION_KEYS key (the
    signing secrets stay the same); then the older keys can be removed."""
    loaded = settings()
    box = secret_box(loaded)
    with engine_for(loaded).begin() as conn:
        count = store.reencrypt(conn, box, utcnow())
        record(
            conn,
            at=utcnow(),
            actor=actor_of(actor),
            action="webhook_endpoints_reencrypt",
            target="webhook_endpoints",
            reason=reason,
            details={"endpoints": count, "kid": box.newest},
        )
    if as_json:
        dump_json({"reencrypted": count, "kid": box.newest})
        return
    out.print(
        f"{count} endpoint(s) re-encrypted under key {box.newest!r}", highlight=False, markup=False
    )

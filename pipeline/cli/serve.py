"""`outbox serve`: the payment webhook receiver and signed downloads, or (`--dashboard`) the
operators' dashboard, under uvicorn. The two never share a process or a port: the dashboard
binds 127.0.0.1:8001 by default, out of reach of the gateways that call the webhooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.clikit import EXIT_CONFIG, CliExit, guarded, settings
from pipeline.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from starlette.types import ASGIApp

__all__ = ["app_factory", "dashboard_app_factory", "dashboard_engine", "serve", "serve_engine"]


def serve_engine(loaded: Settings) -> Engine:
    """The engine of one server process: as many connections as transactions run at once,
    and a quick answer (503) rather than a hanging request when the database is away."""
    from sqlalchemy.engine import make_url

    from infra.db import make_engine

    backend = make_url(loaded.database_url).get_backend_name()
    options: dict[str, Any] = {"pool_timeout": 5}
    if backend != "sqlite":
        options |= {
            "pool_size": loaded.serve_db_connections,
            "max_overflow": 0,
            "connect_args": {"connect_timeout": 3},
        }
    return make_engine(loaded.database_url, **options)


def dashboard_engine(loaded: Settings) -> Engine:
    """The dashboard's engine: every statement time-limited, a bounded pool (ADR 018)."""
    from infra.db_bounded import bounded_engine

    return bounded_engine(
        loaded.database_url,
        statement_timeout_s=loaded.dashboard_statement_timeout_s,
        connections=loaded.dashboard_db_connections,
    )


def app_factory() -> ASGIApp:
    """What each uvicorn worker process runs: settings from the environment, then the app."""
    from infra.heap import settle
    from infra.logs import configure_logging, register_secrets
    from pipeline.wiring import build_web_app

    loaded = load_settings()
    register_secrets(loaded.secret_values())
    configure_logging(loaded.log_level, loaded.log_format)
    app = build_web_app(loaded, serve_engine(loaded))
    settle()  # full collections skip start-up's objects (pauses of 100+ ms otherwise)
    return app


def dashboard_app_factory() -> ASGIApp:
    """What the dashboard's uvicorn process runs."""
    from infra.heap import settle
    from infra.logs import configure_logging, register_secrets
    from pipeline.dashboard_wiring import build_dashboard_app

    loaded = load_settings()
    register_secrets(loaded.secret_values())
    configure_logging(loaded.log_level, loaded.log_format)
    app = build_dashboard_app(loaded, dashboard_engine(loaded))
    settle()
    return app


def _check_dashboard(loaded: Settings) -> None:
    from pipeline.dashboard_wiring import build_dashboard_app

    try:
        build_dashboard_app(loaded, dashboard_engine(loaded))
    except ValueError as exc:
        raise CliExit(EXIT_CONFIG, str(exc)) from exc


def _check(loaded: Settings) -> None:
    """Refuse a configuration the workers could not start with (exit 3), before forking."""
    from pipeline.wiring import build_web_app

    rings = loaded.webhook_secret_rings()
    if rings and not any(rings.values()):
        raise CliExit(
            EXIT_CONFIG,
            "no gateway has webhook secrets (PAYMENT_WEBHOOK_SECRETS__<GATEWAY>): every "
            "webhook would be refused (set them, or PAYMENT_GATEWAYS= to receive none)",
        )
    try:
        build_web_app(loaded, serve_engine(loaded))
    except ValueError as exc:
        raise CliExit(EXIT_CONFIG, str(exc)) from exc


@click.command("serve")
@click.option(
    "--webhooks", "what", flag_value="webhooks", default=True, help="Serve the webhooks (default)."
)
@click.option(
    "--dashboard", "what", flag_value="dashboard", help="Serve the operators' dashboard instead."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port (default 8000 for the webhooks, 8001 for the dashboard).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Server processes (each with SERVE_DB_CONNECTIONS database connections).",
)
@guarded
def serve(what: str, host: str, port: int | None, workers: int) -> None:
    """Receive payment webhooks (POST /webhooks/payments/GATEWAY) and serve signed downloads;
    or, with --dashboard, serve the operators' dashboard (sign-in with DASHBOARD_USERS).

    The webhooks' /healthz answers while the process lives; /readyz when the database is
    reachable and migrated. SIGTERM stops accepting connections and finishes the requests in
    flight. Run the dashboard as its own process, on its own port, bound to a private address.
    """
    import structlog
    import uvicorn

    loaded = settings()
    if what == "dashboard":
        _check_dashboard(loaded)
        port = port or 8001
        structlog.get_logger("web").info("dashboard_started", host=host, port=port, workers=workers)
        uvicorn.run(
            "pipeline.cli.serve:dashboard_app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=10,
            # X-Forwarded-* are believed only from DASHBOARD_TRUSTED_PROXIES, by the app
            # itself; uvicorn's own handling would believe any local client.
            proxy_headers=False,
        )
        return
    port = port or 8000
    _check(loaded)
    structlog.get_logger("web").info(
        "serve_started",
        host=host,
        port=port,
        workers=workers,
        gateways=sorted(loaded.gateway_schemes()),
        verifying_keys={name: len(ring) for name, ring in loaded.webhook_secret_rings().items()},
    )
    for problem in loaded.webhook_secret_notes():  # names only, never a secret
        structlog.get_logger("web").warning("webhook_secrets", problem=problem)
    uvicorn.run(
        "pipeline.cli.serve:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # one line per request of our own (web.middleware), as JSON
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=10,
    )

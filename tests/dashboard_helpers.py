"""The dashboard under test: an app on a real database with two users (an operator and a
viewer), signed in through the real login form, over Starlette's TestClient or a real
uvicorn server for the browser."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import uvicorn
from sqlalchemy import Engine
from starlette.testclient import TestClient

from consumers.groups import Group
from consumers.job import JobRegistry, jobs
from web.dashboard import (
    DashboardConfig,
    LoginLimiter,
    SessionSigner,
    Users,
    create_dashboard_app,
    hash_password,
)

OPERATOR = ("olga", "operator password 1")
VIEWER = ("victor", "viewer password 1")
SECRET_KEY = "k" * 48
_USERS = Users.parse(
    f"{OPERATOR[0]}:operator:{hash_password(OPERATOR[1])};"
    f"{VIEWER[0]}:viewer:{hash_password(VIEWER[1])}"
)


def dashboard_config(
    engine: Engine,
    *,
    groups: Mapping[str, Group] | None = None,
    registry: JobRegistry = jobs,
    **overrides: Any,
) -> DashboardConfig:
    from consumers.groups import GROUPS

    options: dict[str, Any] = {
        "engine": engine,
        "users": _USERS,
        "sessions": SessionSigner(SECRET_KEY, 3600),
        "groups": dict(groups if groups is not None else GROUPS),
        "jobs": registry,
        "shards": 8,
        "login_limiter": LoginLimiter(5),
        **overrides,
    }
    return DashboardConfig(**options)


def login_token(client: TestClient) -> str:
    page = client.get("/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def sign_in(client: TestClient, user: tuple[str, str]) -> str:
    """Sign in through the form; returns the session's CSRF token (from a page)."""
    answer = client.post(
        "/login",
        data={"username": user[0], "password": user[1], "csrf_token": login_token(client)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text[:300]
    page = client.get("/failed")
    found = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def client_for(config: DashboardConfig, base_url: str = "http://127.0.0.1") -> TestClient:
    return TestClient(create_dashboard_app(config), base_url=base_url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_dashboard(config: DashboardConfig) -> Iterator[str]:
    """The app under a real uvicorn server on 127.0.0.1; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_dashboard_app(config), host="127.0.0.1", port=port, log_config=None,
            proxy_headers=False,
            access_log=False,
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def seed_failed(engine: Engine, group: str = "analytics", n: int = 1, **fields: Any) -> list[int]:
    """Failed-job rows as the runtime writes them (for pages that need some)."""
    import json

    from sqlalchemy import insert

    from outbox.schema import failed_jobs_table
    from outbox.types import utcnow

    rows = [
        {
            "group_name": group,
            "job_name": "record-interaction",
            "event_id": f"ev-{i}",
            "type": "interaction.recorded",
            "topic": "interaction-events",
            "kafka_partition": 0,
            "kafka_offset": i,
            "message_key": f"key-{i}",
            "payload": json.dumps({"tenant_id": "acme", "customer_email": "carol@example.com"}),
            "headers": "{}",
            "reason": "exception",
            "exception_class": "ValueError",
            "exception_message": "bad thing for carol@example.com",
            "traceback": "Traceback (most recent call last): ...",
            "attempts": 3,
            "failed_at": utcnow(),
            **fields,
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        ids = [
            conn.execute(insert(failed_jobs_table).values(**row)).inserted_primary_key[0]
            for row in rows
        ]
    return [int(i) for i in ids]

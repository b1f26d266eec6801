"""For the dashboard's security tests: a client at a given address, one sign-in attempt,
a clock the test moves, and counting hashers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from outbox.types import utcnow
from tests.dashboard_helpers import login_token
from web.dashboard import DashboardConfig, create_dashboard_app


def client_at(
    config: DashboardConfig, address: str, base_url: str = "http://127.0.0.1"
) -> TestClient:
    """A browser whose connection comes from `address` (the ASGI client)."""
    return TestClient(create_dashboard_app(config), base_url=base_url, client=(address, 50000))


def attempt(
    client: TestClient, user: str, password: str, next_path: str = "/", **headers: str
) -> httpx.Response:
    """One sign-in through the form (a fresh form token each time)."""
    return client.post(
        "/login",
        data={
            "username": user, "password": password, "csrf_token": login_token(client),
            "next": next_path,
        },
        headers=headers,
        follow_redirects=False,
    )  # fmt: skip


@dataclass
class Clock:
    now: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class CountingHasher(PasswordHasher):
    """Counts verifications and the most run at once; can hold each one until released."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.running = 0
        self.most = 0
        self.hold = hold
        self.entered = threading.Semaphore(0)
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        self.entered.release()
        try:
            if self.hold is not None:
                self.hold.wait(30)
            return bool(super().verify(hash, password))
        finally:
            with self._lock:
                self.running -= 1


def as_form(answer: Any) -> str:
    return str(answer.text)

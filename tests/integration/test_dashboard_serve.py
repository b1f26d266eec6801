"""`outbox serve --dashboard` as its own process: it refuses to start without its users and
key (exit 3, naming the variable, never a secret), binds 127.0.0.1, and shares no route with
the public webhook receiver."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from pipeline.cli import main
from tests.conftest import server_engine
from tests.webhook_helpers import free_port, serve_env, serving
from web.dashboard import hash_password

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "a long operator password"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return server_engine("postgresql")


def _env(engine: Engine, tmp: Path, **extra: str) -> dict[str, str]:
    return serve_env(engine.url.render_as_string(hide_password=False), tmp, **extra)


@dataclass
class Refused:
    returncode: int
    stdout: str
    stderr: str


def _dashboard(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Refused:
    """`outbox serve --dashboard` in process: it is refused before uvicorn would start."""
    for name in ("DASHBOARD_USERS", "DASHBOARD_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if name.startswith(("DASHBOARD_", "DATABASE_URL")):
            monkeypatch.setenv(name, value)
    code = main(["serve", "--dashboard"])
    printed = capsys.readouterr()
    return Refused(code, printed.out, printed.err)


def test_the_dashboard_refuses_to_start_without_users_or_key(
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hashed = hash_password(PASSWORD)
    env = _env(engine, tmp_path)
    env.pop("DASHBOARD_USERS", None)
    missing = _dashboard(env, monkeypatch, capsys)
    assert missing.returncode == 3 and "DASHBOARD_USERS is not set" in missing.stderr
    env["DASHBOARD_USERS"] = f"olga:operator:{hashed}"
    no_key = _dashboard(env, monkeypatch, capsys)
    assert no_key.returncode == 3 and "DASHBOARD_SECRET_KEY" in no_key.stderr
    env["DASHBOARD_SECRET_KEY"] = "short"
    short = _dashboard(env, monkeypatch, capsys)
    assert short.returncode == 3 and "at least 32 characters" in short.stderr
    env["DASHBOARD_SECRET_KEY"] = "s" * 40
    env["DASHBOARD_USERS"] = f"olga:admin:{hashed}"
    bad_role = _dashboard(env, monkeypatch, capsys)
    assert bad_role.returncode == 3 and "viewer or operator" in bad_role.stderr
    env["DASHBOARD_USERS"] = "olga:operator:plaintext-password"
    plain = _dashboard(env, monkeypatch, capsys)
    assert plain.returncode == 3 and "argon2 hash" in plain.stderr
    for answer in (missing, no_key, short, bad_role, plain):
        assert hashed not in answer.stderr + answer.stdout
        assert "plaintext-password" not in answer.stderr + answer.stdout


def test_the_dashboard_and_the_webhooks_run_apart(engine: Engine, tmp_path: Path) -> None:
    env = _env(
        engine, tmp_path,
        DASHBOARD_USERS=f"olga:operator:{hash_password(PASSWORD)}",
        DASHBOARD_SECRET_KEY="s" * 40,
    )  # fmt: skip
    port = free_port()
    log = tmp_path / "dashboard.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", "--dashboard", "--port", str(port)],
            env=env, stdout=sink, stderr=sink,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/login", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not answer within 30 s"
            time.sleep(0.1)
        assert httpx.get(f"{url}/failed").status_code == 303  # to the login page
        assert httpx.post(f"{url}/webhooks/payments/standard", content=b"{}").status_code == 401
        with httpx.Client(base_url=url) as client:
            page = client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert token
            signed = client.post(
                "/login",
                data={"username": "olga", "password": PASSWORD, "csrf_token": token.group(1)},
            )
            assert signed.status_code == 303
            assert client.get("/failed").status_code == 200
            assert client.get("/webhooks/payments/standard").status_code == 404
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=False
        ).stdout
        local = [line.split()[3] for line in listening.splitlines() if line.strip()]
        assert local == [f"127.0.0.1:{port}"]  # not 0.0.0.0 nor [::]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    text = log.read_text()
    assert PASSWORD not in text and "$argon2" not in text
    with serving(_env(engine, tmp_path), tmp_path / "webhooks.log") as webhooks:
        assert httpx.get(f"{webhooks.url}/failed").status_code == 404
        assert httpx.get(f"{webhooks.url}/login").status_code == 404

"""Every dashboard page in a real Chromium at 1440 px and 390 px, light and dark, with hostile
data (a 250-character key, a U+202E in an image path and an audit reason, a parked key):
no page is wider than the viewport, no page error, dark mode applies, the hidden
characters show as escapes, relative times carry the absolute time. Each view is saved as
a PNG under build/screenshots/ (gitignored), the artifacts of the issue's screenshots."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from outbox import parking
from outbox.envelope import Envelope
from outbox.schema import outbox_table
from outbox.types import utcnow
from outbox.writer import append
from tests.dashboard_helpers import OPERATOR, dashboard_config, running_dashboard, seed_failed
from tests.integration.test_dashboard_browser import browser  # noqa: F401 - the fixture
from tests.webhook_ops_helpers import add_attempt, add_delivery, add_endpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
LONG_KEY = "tenant-" + "x" * 243  # 250 characters, no place to break but anywhere
SPOOF = "invoice\u202egpj.exe.png"
WIDTHS = (1440, 390)
SCHEMES = ("light", "dark")


@pytest.fixture
def hostile(postgres_db: Engine) -> dict[str, Any]:
    engine = postgres_db
    now = utcnow()
    (failed_id,) = seed_failed(
        engine, message_key=LONG_KEY, payload=json.dumps({"image": SPOOF}),
        exception_message=f"cannot open {SPOOF}", event_id=str(uuid.uuid4()),
    )  # fmt: skip
    seed_failed(engine, n=30)
    with engine.begin() as conn:
        append(
            conn,
            [
                Envelope(
                    event_id=str(uuid.uuid4()),
                    topic="interaction-events",
                    key=key,
                    type="interaction.recorded",
                    payload=json.dumps({"image": SPOOF}),
                    occurred_at=now,
                )
                for key in (LONG_KEY, LONG_KEY, SPOOF, "plain-key")
            ],
            shards=8,
        )
        parking.park(conn, LONG_KEY, actor="olga", reason=f"spoofed {SPOOF}", now=now)
        outbox_id = conn.execute(
            select(outbox_table.c.id).where(outbox_table.c.key == LONG_KEY)
        ).scalar()
        # Webhooks: a 2,000-character URL with a U+202E, a long unbroken excerpt.
        add_endpoint(conn, "ep_long", now, url=f"https://hooks.example.com/{'y' * 1970}{SPOOF}")
        add_endpoint(conn, "ep_off", now, state="disabled", disabled_reason=f"gone {SPOOF}")
        delivery_id = add_delivery(conn, "ev-hostile", "ep_long", now)
        add_delivery(conn, "ev-hostile", "ep_off", now)
        add_attempt(conn, delivery_id, now, outcome="failed", response_excerpt="z" * 4096)
    return {"engine": engine, "failed_id": failed_id, "outbox_id": outbox_id}


def _pages(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("overview", "/"),
        ("jobs", "/jobs"),
        ("waiting", "/waiting"),
        ("failed", "/failed"),
        ("failed-one", f"/failed/{data['failed_id']}?payload=1"),
        ("batches", "/batches"),
        ("outbox", "/outbox"),
        ("outbox-one", f"/outbox/{data['outbox_id']}"),
        ("scheduler", "/scheduler"),
        ("audit", "/audit"),
        ("webhooks", "/webhooks"),
        ("webhook-endpoint", "/webhooks/endpoints/ep_long"),
        ("webhook-event", "/webhooks/events/ev-hostile"),
    ]


def _fits(page: Any) -> tuple[int, int]:
    width: tuple[int, int] = page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    return width


def _context(chromium: Any, width: int, scheme: str) -> Any:
    return chromium.new_context(
        viewport={"width": width, "height": 900}, color_scheme=scheme, device_scale_factor=1
    )


def test_every_page_fits_390_px_and_both_schemes(
    hostile: dict[str, Any],
    browser: Any,  # noqa: F811 - the fixture
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    config = dashboard_config(hostile["engine"])
    backgrounds: dict[str, str] = {}
    with running_dashboard(config) as base:
        for width in WIDTHS:
            for scheme in SCHEMES:
                context = _context(browser, width, scheme)
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc, e=errors: e.append(str(exc)))
                page.on(
                    "console",
                    lambda m, e=errors: (
                        e.append(m.text)
                        if m.type == "error" and not m.text.startswith("Failed to load resource")
                        else None
                    ),
                )
                page.on(  # a failed load, but the favicon the dashboard does not have
                    "response",
                    lambda r, e=errors: (
                        e.append(f"{r.status} {r.url}")
                        if r.status >= 400 and not r.url.endswith("/favicon.ico")
                        else None
                    ),
                )
                page.goto(f"{base}/login")
                assert _fits(page)[0] <= _fits(page)[1], ("login", width, scheme)
                page.screenshot(path=str(SHOTS / f"login-{width}-{scheme}.png"), full_page=True)
                page.fill("input[name=username]", OPERATOR[0])
                page.fill("input[name=password]", OPERATOR[1])
                page.click("button[type=submit]")
                page.wait_for_load_state()
                for name, path in _pages(hostile):
                    page.goto(f"{base}{path}")
                    page.wait_for_load_state("networkidle")
                    scroll, inner = _fits(page)
                    assert scroll <= inner, (name, width, scheme, scroll, inner)
                    page.screenshot(
                        path=str(SHOTS / f"{name}-{width}-{scheme}.png"), full_page=True
                    )
                assert errors == [], (width, scheme, errors)
                backgrounds[scheme] = page.evaluate(
                    "getComputedStyle(document.body).backgroundColor"
                )
                context.close()
    assert backgrounds["light"] != backgrounds["dark"]
    assert len(list(SHOTS.glob("*-390-dark.png"))) == len(_pages(hostile)) + 1


def test_hostile_values_show_escaped_wrapped_and_times_on_hover(
    hostile: dict[str, Any],
    browser: Any,  # noqa: F811 - the fixture
) -> None:
    config = dashboard_config(hostile["engine"])
    with running_dashboard(config) as base:
        context = _context(browser, 390, "light")
        page = context.new_page()
        page.goto(f"{base}/login")
        page.fill("input[name=username]", OPERATOR[0])
        page.fill("input[name=password]", OPERATOR[1])
        page.click("button[type=submit]")
        page.wait_for_load_state()
        page.goto(f"{base}/audit?action=park")
        # Live refresh: htmx asks for the page again and swaps the list in place...
        with page.expect_request(
            lambda r: "/audit?action=park" in r.url and r.headers.get("hx-request") == "true",
            timeout=30_000,
        ):
            pass
        why = page.get_by_test_id("audit-why").first.inner_text()
        assert why == "spoofed invoice\\u202egpj.exe.png"
        title = page.locator("time").first.get_attribute("title")
        assert title is not None and title.endswith(" UTC")
        page.goto(f"{base}/waiting")
        parked = page.get_by_test_id("parked-table")
        assert LONG_KEY in parked.inner_text()
        box = parked.bounding_box()
        assert box is not None and box["width"] <= 390
        toggle = page.get_by_test_id("live-toggle")
        assert toggle.is_visible() and toggle.get_attribute("aria-pressed") == "true"
        toggle.click()
        assert toggle.get_attribute("aria-pressed") == "false"
        assert toggle.inner_text() == "Live: paused"
        # ...and, paused, the next poll is cancelled before it is sent.
        page.evaluate(
            "document.addEventListener('htmx:beforeRequest',"
            " e => { window.pollSkipped = e.defaultPrevented; })"
        )
        page.wait_for_function("() => window.pollSkipped === true", timeout=30_000)
        page.reload()
        assert page.get_by_test_id("live-toggle").inner_text() == "Live: paused"  # remembered
        page.goto(f"{base}/outbox")
        assert page.get_by_test_id("status-parked").count() == 2
        context.close()

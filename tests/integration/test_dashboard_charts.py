"""The charts read the rollups table: the overview's bars and percentile lines carry the
counts and percentiles that were written, per span, and the history page narrows to a
group and a job. Parsed from the HTML, not matched as text."""

from __future__ import annotations

from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from infra.db import make_engine
from infra.migrate import upgrade
from outbox.histogram import bucket_of, bucket_range
from outbox.rollups import Rollups, Sample
from tests.dashboard_helpers import (
    VIEWER,
    client_for,
    dashboard_config,
    running_dashboard,
    sign_in,
)
from tests.integration.test_dashboard_browser import ARTIFACTS, browser  # noqa: F401 - fixture
from tests.integration.test_dashboard_browser import sign_in as browser_sign_in

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 7, 12, 30, 20, tzinfo=UTC)


class Shapes(HTMLParser):
    """The charts' shapes and the totals table's rows, by chart."""

    def __init__(self) -> None:
        super().__init__()
        self.chart = ""
        self.rects: dict[str, list[dict[str, str]]] = {}
        self.paths: dict[str, dict[str, str]] = {}
        self.totals: list[dict[str, str]] = []
        self.svgs = 0
        self.spans: list[str] = []
        self.in_spans = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "figure" and a.get("data-testid", "").startswith("chart-"):
            self.chart = a["data-testid"].removeprefix("chart-")
        elif tag == "svg" and "chart-svg" in a.get("class", ""):
            self.svgs += 1
        elif tag == "rect" and "data-value" in a:
            self.rects.setdefault(self.chart, []).append(a)
        elif tag == "path" and "data-label" in a:
            self.paths[f"{self.chart}:{a['data-label']}"] = a
        elif tag == "tr" and "data-group" in a:
            self.totals.append(a)
        elif tag == "a" and self.in_spans:
            self.spans.append(a["href"])
        elif tag == "nav" and a.get("class") == "spans":
            self.in_spans = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav":
            self.in_spans = False


def _seed(engine: Engine) -> None:
    # 12:29 and 12:30: media/resize handled 3 + 2 (one failed at 12:30), waits 5 ms and
    # 200 ms; analytics/record one handled; the relay published 4 on "orders".
    at = [NOW.timestamp() - 60]
    rollups = Rollups(clock=lambda: at[0])
    for _ in range(3):
        rollups.job("media", "resize", Sample(handled=1, wait_ms=5.0, run_ms=2.0))
    at[0] = NOW.timestamp()
    for _ in range(2):
        rollups.job("media", "resize", Sample(handled=1, wait_ms=200.0, run_ms=40.0))
    rollups.job("media", "resize", Sample(failed=1, run_ms=3.0))
    rollups.job("analytics", "record", Sample(handled=1, wait_ms=1.0, run_ms=1.0))
    for _ in range(4):
        rollups.relay("orders", Sample(published=1, wait_ms=10.0))
    assert rollups.flush(engine) == 4  # media twice, analytics, orders


def _page(engine: Engine, path: str) -> Shapes:
    client = client_for(dashboard_config(engine, clock=lambda: NOW))
    sign_in(client, VIEWER)
    answer = client.get(path)
    assert answer.status_code == 200, answer.text[:300]
    shapes = Shapes()
    shapes.feed(answer.text)
    return shapes


def _middle(ms: float) -> float:
    low, high = bucket_range(bucket_of(ms))
    return (low * high) ** 0.5


def test_the_overview_draws_the_last_hour_from_the_rollups(engine: Engine) -> None:
    _seed(engine)
    shapes = _page(engine, "/")
    assert shapes.svgs == 3
    bars = {(r["class"], r["data-at"]): int(r["data-value"]) for r in shapes.rects["throughput"]}
    assert bars == {
        ("bar-handled", "2026-12-07 12:29"): 3,
        ("bar-handled", "2026-12-07 12:30"): 3,
        ("bar-failed", "2026-12-07 12:30"): 1,
    }
    published = [(r["data-at"], int(r["data-value"])) for r in shapes.rects["published"]]
    assert published == [("2026-12-07 12:30", 4)]
    # The wait's p50 per minute: 5 ms at 12:29; at 12:30 1 ms and twice 200 ms -> 200 ms.
    p50 = [v for v in shapes.paths["wait:p50"]["data-values"].split(",") if v]
    assert [float(v) for v in p50] == pytest.approx([_middle(5.0), _middle(200.0)], rel=1e-3)
    rows = {(r["data-group"], r["data-job"]) for r in shapes.totals}
    assert rows == {("media", "resize"), ("analytics", "record"), ("orders", "")}
    # The charts' refresh swaps in the same charts, whose span links go to the overview.
    partial = _page(engine, "/partials/charts?span=24h")
    assert partial.svgs == 3 and partial.rects.keys() == {"throughput", "published"}
    assert partial.spans == ["/?span=1h", "/?span=24h", "/?span=14d"]


@pytest.mark.parametrize("span", ["24h", "14d"])
def test_longer_spans_sum_the_minutes_into_their_points(engine: Engine, span: str) -> None:
    _seed(engine)
    shapes = _page(engine, f"/?span={span}")
    handled = sum(int(r["data-value"]) for r in shapes.rects["throughput"]
                  if r["class"] == "bar-handled")  # fmt: skip
    failed = sum(int(r["data-value"]) for r in shapes.rects["throughput"]
                 if r["class"] == "bar-failed")  # fmt: skip
    assert (handled, failed) == (6, 1)
    assert len(shapes.rects["published"]) == 1


def test_the_history_page_narrows_to_a_job_with_its_run_time(engine: Engine) -> None:
    _seed(engine)
    shapes = _page(engine, "/history?group=media&job=resize")
    handled = sum(int(r["data-value"]) for r in shapes.rects["throughput"]
                  if r["class"] == "bar-handled")  # fmt: skip
    assert handled == 5  # analytics' one is not media's
    # Run p99 at 12:30: the failed attempt's 3 ms and two 40 ms runs -> 40 ms.
    p99 = [v for v in shapes.paths["run:p99"]["data-values"].split(",") if v]
    assert float(p99[-1]) == pytest.approx(_middle(40.0), rel=1e-3)
    assert [(r["data-group"], r["data-job"]) for r in shapes.totals] == [("media", "resize")]


def test_an_empty_table_draws_empty_charts_and_a_bad_filter_is_refused(engine: Engine) -> None:
    shapes = _page(engine, "/?span=nonsense")
    assert shapes.svgs == 3 and shapes.rects == {} and shapes.paths == {}
    client = client_for(dashboard_config(engine, clock=lambda: NOW))
    sign_in(client, VIEWER)
    assert client.get("/history", params={"group": "x\x00y"}).status_code == 400
    assert client.get("/history", params={"job": "j" * 101}).status_code == 400


@pytest.mark.slow
def test_the_charts_render_in_chromium_wide_narrow_and_dark(
    postgres_db: Engine,
    browser: Any,  # noqa: F811 - the fixture imported above
) -> None:
    _seed(postgres_db)
    errors: list[str] = []
    with running_dashboard(dashboard_config(postgres_db, clock=lambda: NOW)) as base:
        for width, scheme in ((1440, "light"), (390, "light"), (390, "dark")):
            context = browser.new_context(
                viewport={"width": width, "height": 900}, color_scheme=scheme
            )
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            browser_sign_in(page, base, VIEWER)
            page.goto(f"{base}/")
            throughput = page.get_by_test_id("chart-throughput")
            assert throughput.locator("rect.bar-handled[data-value]").count() == 2
            assert throughput.locator("rect.bar-failed[data-value]").count() == 1
            box = throughput.locator("svg.chart-svg").bounding_box()
            assert box is not None and 0 < box["width"] <= width
            # The bars are drawn in a colour (the theme's), not left black or unfilled.
            fill = throughput.locator("rect.bar-handled[data-value]").first.evaluate(
                "e => getComputedStyle(e).fill"
            )
            assert fill not in ("", "none", "rgb(0, 0, 0)")
            overflow = page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= width + 1 or width > 390  # the charts never widen a phone page
            page.screenshot(path=str(ARTIFACTS / f"charts-{width}-{scheme}.png"), full_page=True)
            page.goto(f"{base}/history?group=media&job=resize&span=24h")
            assert page.get_by_test_id("chart-run").locator("path.line-p99").count() == 1
            context.close()
    assert errors == []


@pytest.fixture(scope="module")
def hostile_client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One signed-in client on one seeded SQLite database for every example."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'o.db'}")
    upgrade(engine)
    _seed(engine)
    client = client_for(dashboard_config(engine, clock=lambda: NOW))
    sign_in(client, VIEWER)
    return client


@settings(max_examples=60, deadline=None)
@given(
    group=st.text(max_size=300),
    job=st.text(max_size=120),
    span=st.one_of(st.sampled_from(["1h", "24h", "14d"]), st.text(max_size=10)),
)
def test_hostile_history_filters_answer_200_or_400(
    hostile_client: Any, group: str, job: str, span: str
) -> None:
    answer = hostile_client.get("/history", params={"group": group, "job": job, "span": span})
    assert answer.status_code in (200, 400), answer.text[:300]
    if answer.status_code == 200:
        assert answer.text.count('class="chart-svg"') == 3
    assert hostile_client.get("/", params={"span": span}).status_code == 200

"""infra.db.use_generic_plans: the relay's PostgreSQL sessions plan a prepared statement
once (`plan_cache_mode = force_generic_plan`) on every connection its pool opens, whatever
a transaction did before; other backends are left as they are; `outbox relay` uses it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from domain import CommandBus
from infra import db
from infra.broker import EmbeddedBroker
from infra.db import make_engine, use_generic_plans
from outbox import OutboxStatus, outbox_table
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK
from tests.conftest import server_engine
from tests.scenario import run_full_scenario

pytestmark = pytest.mark.integration


def _mode(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SHOW plan_cache_mode")).scalar_one())


def test_every_new_connection_plans_once_and_keeps_it(postgres_db: Engine) -> None:
    url = postgres_db.url.render_as_string(hide_password=False)
    plain = make_engine(url, pool_size=1)
    engine = use_generic_plans(make_engine(url, pool_size=2, max_overflow=0))
    try:
        assert _mode(plain) == "auto"  # PostgreSQL's default, untouched elsewhere
        with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == (
                    "force_generic_plan"
                )
            first.rollback()  # a transaction rolled back does not undo the session's SET
            assert first.execute(text("SHOW plan_cache_mode")).scalar_one() == (
                "force_generic_plan"
            )
        engine.dispose()  # connections made afresh get it too
        assert _mode(engine) == "force_generic_plan"
    finally:
        plain.dispose()
        engine.dispose()


def test_other_backends_are_left_as_they_are(tmp_path: Path) -> None:
    mysql_url = server_engine("mysql").url.render_as_string(hide_password=False)
    for url in (f"sqlite:///{tmp_path}/plans.db", mysql_url):
        engine = make_engine(url)
        try:
            assert use_generic_plans(engine) is engine
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar_one() == 1
        finally:
            engine.dispose()


def test_the_relay_claims_with_generic_plans_on_postgresql(
    postgres_db: Engine,
    kafka: EmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[str] = []
    real = db.use_generic_plans

    def spy(engine: Engine) -> Engine:
        used = real(engine)
        seen.append(_mode(used))
        return used

    monkeypatch.setattr(db, "use_generic_plans", spy)
    monkeypatch.setenv("DATABASE_URL", postgres_db.url.render_as_string(hide_password=False))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    run_full_scenario(CommandBus(postgres_db, shards=16))
    with postgres_db.connect() as conn:
        written = conn.execute(select(func.count()).select_from(outbox_table)).scalar_one()
    capsys.readouterr()

    assert main(["relay", "--once", "--json"]) == EXIT_OK

    assert seen == ["force_generic_plan"]
    assert json.loads(capsys.readouterr().out)["published"] == written
    with postgres_db.connect() as conn:
        statuses: set[Any] = set(conn.execute(select(outbox_table.c.status)).scalars())
    assert statuses == {OutboxStatus.PUBLISHED}

"""Backends for the contract suite.

Every test that takes `engine` runs on SQLite, PostgreSQL and MariaDB. A server that cannot
be reached skips its tests locally and fails them when OUTBOX_TEST_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import structlog
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

import domain.schema
import jobs  # noqa: F401  (the application: declares its groups, registers its jobs)
import outbox.schema
from domain import CommandBus
from infra.broker import BrokerError, EmbeddedBroker
from infra.db import make_engine
from infra.dbadmin import create_database_if_missing, drop_all_tables
from infra.migrate import upgrade
from pipeline.wiring import routed_topics
from relay import ensure_topics

if TYPE_CHECKING:
    from tests.campaign_harness import SmtpServer

SERVER_URLS = {
    "postgresql": os.environ.get(
        "OUTBOX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/outbox_test"
    ),
    "mysql": os.environ.get(
        "OUTBOX_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/outbox_test"
    ),
}
# Under pytest-xdist each worker (gw0, gw1, ...) gets databases of its own: one suffix per
# worker on the configured names, so that two workers never truncate each other's tables.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER:
    SERVER_URLS = {
        kind: make_url(url)
        .set(database=f"{make_url(url).database}_{_WORKER}")
        .render_as_string(hide_password=False)
        for kind, url in SERVER_URLS.items()
    }
REQUIRE_SERVICES = os.environ.get("OUTBOX_TEST_REQUIRE_SERVICES") == "1"
ALL_TABLES = [*domain.schema.metadata.sorted_tables, *outbox.schema.metadata.sorted_tables]


_server_engines: dict[str, Engine] = {}


def server_engine(kind: str) -> Engine:
    """A migrated engine for a database server, created once per test session."""
    if kind in _server_engines:
        return _server_engines[kind]
    url = SERVER_URLS[kind]
    try:
        create_database_if_missing(url)
        engine = make_engine(url)
        drop_all_tables(engine)
        upgrade(engine)
    except OperationalError as exc:
        message = f"{kind} is not reachable at {make_url(url).render_as_string()}: {exc.orig}"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    _server_engines[kind] = engine
    return engine


def truncate(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(ALL_TABLES):
            conn.execute(table.delete())


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """A CLI test configures structlog; the next test starts from the defaults again."""
    yield
    structlog.reset_defaults()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "outbox.db"
        eng = make_engine(f"sqlite:///{path}")
        upgrade(eng)
        yield eng
        eng.dispose()
        return
    eng = server_engine(request.param)
    truncate(eng)
    yield eng
    truncate(eng)


@pytest.fixture(params=["postgresql", "mysql"])
def server_db(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A migrated, empty database server (for real concurrency)."""
    eng = server_engine(request.param)
    truncate(eng)
    yield eng
    truncate(eng)


@pytest.fixture
def postgres_db() -> Iterator[Engine]:
    """A migrated, empty PostgreSQL database (for what only PostgreSQL does)."""
    eng = server_engine("postgresql")
    truncate(eng)
    yield eng
    truncate(eng)


@pytest.fixture
def bus(engine: Engine) -> CommandBus:
    return CommandBus(engine, shards=8)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """The campaign tests' aiosmtpd server on 127.0.0.1 (tests/campaign_harness.py)."""
    from tests.campaign_harness import SmtpServer

    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def started_broker() -> EmbeddedBroker:
    """An embedded broker with the routed topics; skipped locally, failed in CI, without it."""
    try:
        broker = EmbeddedBroker().start()
    except BrokerError as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"embedded broker: {exc}")
        pytest.skip(f"embedded broker: {exc}")
    ensure_topics(broker.bootstrap_servers, routed_topics())
    return broker


# A broker of the tester's choosing (Apache Kafka, say) instead of the embedded one.
EXTERNAL_KAFKA = os.environ.get("OUTBOX_TEST_KAFKA_BOOTSTRAP")


class ExternalBroker:
    """A running broker named by OUTBOX_TEST_KAFKA_BOOTSTRAP (the tests do not own it)."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers

    def stop(self) -> None:
        """Not ours to stop."""


@pytest.fixture(scope="session")
def kafka() -> Iterator[EmbeddedBroker | ExternalBroker]:
    """One broker for the session, with the routed topics: the embedded one (Tansu, memory
    only), or the one OUTBOX_TEST_KAFKA_BOOTSTRAP names.

    Tests isolate themselves by topic and group name (`fresh_topic`)."""
    if EXTERNAL_KAFKA:
        ensure_topics(EXTERNAL_KAFKA, routed_topics())
        yield ExternalBroker(EXTERNAL_KAFKA)
        return
    broker = started_broker()
    yield broker
    broker.stop()


@pytest.fixture
def private_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, for tests that pause or stop it; and, until the
    example and demo applications take group and topic names, for the foreign-application
    and profile-demo tests (fixed names; the whole topic list checked). ADR 020, 9."""
    if EXTERNAL_KAFKA:
        pytest.skip(
            "pauses and stops a broker of its own; OUTBOX_TEST_KAFKA_BOOTSTRAP names a shared "
            "one (run without it to include this test)"
        )
    broker = started_broker()
    yield broker
    broker.stop()

"""`outbox consume`, `outbox failed ...` and `outbox batches ...` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from consumers import GROUPS, store
from infra.db import make_engine
from infra.migrate import upgrade
from outbox import failed_jobs_table, outbox_table
from outbox.types import utcnow
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_BROKER_UNREACHABLE, EXIT_FAILED, EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.integration


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("DATABASE_URL", url)
    engine = make_engine(url)
    upgrade(engine)
    return engine


def _failed(engine: Engine, n: int) -> list[int]:
    ids = []
    with engine.begin() as conn:
        for i in range(n):
            ids.append(
                store.insert_failed(
                    conn,
                    {
                        "group_name": "media",
                        "job_name": "generate-product-blurhash",
                        "event_id": f"00000000-0000-0000-0000-00000000000{i}",
                        "type": "product.image_uploaded",
                        "topic": "product-events",
                        "kafka_partition": 1,
                        "kafka_offset": 10 + i,
                        "message_key": f"p{i}",
                        "payload": json.dumps({"image_path": "customer@example.com.jpg"}),
                        "payload_encoding": "utf-8",
                        "headers": json.dumps({"tenant_id": "t-1", "x-attempt": "3"}),
                        "reason": "exception",
                        "exception_class": "OSError",
                        "exception_message": "disk on fire",
                        "traceback": "Traceback (most recent call last): ...",
                        "attempts": 3,
                        "failed_at": utcnow(),
                    },
                )
            )
    return ids


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_failed_list_and_show_print_json_without_the_payload_unless_asked(
    db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = _failed(db, 2)
    assert main(["failed", "list", "--json"]) == EXIT_OK
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["id"], x["reason"], x["attempts"]) for x in lines] == [
        (first, "exception", 3),
        (first + 1, "exception", 3),
    ]
    assert main(["failed", "show", str(first), "--json"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["exception_message"] == "disk on fire"
    assert "example.com" not in shown["payload"]
    assert main(["failed", "show", str(first), "--json", "--payload"]) == EXIT_OK
    assert "image_path" in json.loads(capsys.readouterr().out)["payload"]
    assert main(["failed", "show", "999"]) == EXIT_USAGE


def test_failed_retry_moves_the_message_to_its_groups_retry_topic_as_attempt_one(
    db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _failed(db, 2)
    assert main(["failed", "retry", str(first), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"retried": [first], "skipped_unknown_group": 0}
    with db.connect() as conn:
        [row] = conn.execute(select(outbox_table)).all()
        left = conn.execute(select(failed_jobs_table.c.id)).scalars().all()
    assert row.topic == "media.retry"
    assert row.event_id == "00000000-0000-0000-0000-000000000000"
    headers = json.loads(row.headers)
    assert headers["x-attempt"] == "1"
    assert headers["x-job"] == "generate-product-blurhash"
    assert headers["x-original"] == "product-events@1/10"
    assert left == [second]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["failed", "retry"], "say which"),
        (["failed", "retry", "--all", "--range", "1-2"], "say which"),
        (["failed", "retry", "--range", "5-1"], "FROM <= TO"),
        (["failed", "retry", "--range", "x"], "FROM <= TO"),
        (["failed", "retry", "--since", "yesterday-ish"], "'yesterday-ish' is neither"),
        (["failed", "retry", "12345"], "no failed job"),
        (["failed", "forget", "12345", "--yes"], "no failed job"),
        (["failed", "flush"], "pass --yes"),
        (["failed", "retry", "--all"], "pass --yes"),
    ],
)
def test_bad_or_unconfirmed_failed_commands_exit_2_and_change_nothing(
    db: Engine, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    _failed(db, 2)
    assert main(args) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert _count(db, failed_jobs_table) == 2
    assert _count(db, outbox_table) == 0


def test_failed_retry_since_and_flush(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    _failed(db, 3)
    assert main(["failed", "retry", "--since", "1h", "--yes", "--json"]) == EXIT_OK
    assert len(json.loads(capsys.readouterr().out)["retried"]) == 3
    kept, _ = _failed(db, 2)
    assert main(["failed", "forget", str(kept), "--yes", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"deleted": 1}
    assert main(["failed", "flush", "--group", "media", "--yes", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["deleted"] == 1
    assert _count(db, failed_jobs_table) == 0


def test_batches_list_and_show(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    with db.begin() as conn:
        store.create_batch(
            conn,
            batch_id="b-1",
            name="campaign 7",
            group="media",
            total=3,
            now=utcnow(),
            then_job=None,
            catch_job=None,
            finally_job=None,
        )
        store.batch_progress(conn, "b-1", failed=True, now=utcnow())
    assert main(["batches", "list", "--json"]) == EXIT_OK
    [listed] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (listed["total"], listed["pending"], listed["failed"], listed["state"]) == (
        3,
        2,
        1,
        "running",
    )
    assert main(["batches", "show", "b-1", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["name"] == "campaign 7"
    assert main(["batches", "show", "nope"]) == EXIT_USAGE


def test_consume_refuses_an_unknown_group(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["consume", "--group", "nope"]) == EXIT_USAGE
    err = " ".join(capsys.readouterr().err.split())  # the message is wrapped to the terminal
    assert f"known groups: {', '.join(sorted(GROUPS))}" in err


def test_consume_exits_5_when_no_broker_answers(
    db: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert main(["consume", "--group", "media", "--worker"]) == EXIT_BROKER_UNREACHABLE
    assert "no Kafka broker answered" in capsys.readouterr().err


def test_consume_on_an_unmigrated_database_says_to_upgrade_before_touching_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/empty.db")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    assert main(["consume", "--group", "media", "--worker"]) == EXIT_FAILED
    said = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "the database is not migrated (no such table: inbox): run `outbox db upgrade`" in said

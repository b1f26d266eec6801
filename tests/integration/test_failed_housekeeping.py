"""`outbox failed flush --older-than` and `outbox failed list --job --exception`: the
housekeeping of failed jobs, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from consumers import GROUPS, store
from consumers.failed_jobs import FailedFilter, flush
from outbox import failed_jobs_table
from outbox.audit import entries
from outbox.types import utcnow
from pipeline.cli import main
from pipeline.cli.clikit import EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.integration
f = failed_jobs_table

# (group, job, exception class, hours ago)
ROWS = [
    ("media", "generate-product-blurhash", "OSError", 100),
    ("media", "generate-product-blurhash", "UnidentifiedImageError", 100),
    ("notifications", "send-appointment-reminder", "ReminderNotSent", 80),
    ("notifications", "send-appointment-reminder", "ReminderNotSent", 1),
    ("payments", "process-payment-webhook", "LedgerMismatch", 200),
]


def _insert(engine: Engine, rows: list[tuple[str, str, str, int]] = ROWS) -> list[int]:
    now = utcnow()
    with engine.begin() as conn:
        return [
            store.insert_failed(
                conn,
                {
                    "group_name": group,
                    "job_name": job,
                    "event_id": f"e-{n}",
                    "type": "t",
                    "topic": f"{group}.jobs",
                    "kafka_partition": 0,
                    "kafka_offset": n,
                    "message_key": f"k-{n}",
                    "payload": "{}",
                    "payload_encoding": "utf-8",
                    "headers": "{}",
                    "reason": "exception",
                    "exception_class": exception,
                    "exception_message": "it broke",
                    "traceback": None,
                    "attempts": 3,
                    "failed_at": now - timedelta(hours=hours),
                },
            )
            for n, (group, job, exception, hours) in enumerate(rows)
        ]


def _left(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(f.c.group_name, f.c.exception_class).order_by(f.c.id))
        return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.fixture
def cli_db(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    return engine


def test_flush_older_than_deletes_only_older_rows_and_keeps_the_reviewed_group(
    cli_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _insert(cli_db)
    args = ["failed", "flush", "--older-than", "72h", "--yes", "--json", "--actor", "ops"]
    assert main(args) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert result == {
        "deleted": 3,
        "by_job": {
            "media/generate-product-blurhash": 2,
            "notifications/send-appointment-reminder": 1,
        },
        "kept_for_review": 1,
        "dry_run": False,
    }
    assert _left(cli_db) == [("notifications", "ReminderNotSent"), ("payments", "LedgerMismatch")]
    with cli_db.connect() as conn:
        [entry] = entries(conn, action="failed.flush")
    assert entry.actor == "ops"
    details = json.loads(entry.details)
    assert details["deleted"] == 3
    assert details["filter"]["exclude_groups"] == ["payments"]
    assert "before" in details["filter"]


def test_dry_run_deletes_nothing_and_says_what_would_go(
    cli_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _insert(cli_db)
    assert main(["failed", "flush", "--older-than", "3d", "--dry-run", "--json"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert (result["deleted"], result["dry_run"], result["kept_for_review"]) == (3, True, 1)
    assert len(_left(cli_db)) == len(ROWS)
    with cli_db.connect() as conn:
        assert entries(conn, action="failed.flush") == []


def test_the_reviewed_group_is_flushed_only_with_include_reviewed_and_a_reason(
    cli_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _insert(cli_db)
    base = ["failed", "flush", "--group", "payments", "--yes", "--json"]
    assert main([*base, "--include-reviewed"]) == EXIT_USAGE
    assert "say why with --reason" in capsys.readouterr().err
    assert main(base) == EXIT_OK  # without the flag: kept, and said so
    assert json.loads(capsys.readouterr().out)["kept_for_review"] == 1
    assert main([*base, "--include-reviewed", "--reason", "INC-7 closed"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["deleted"] == 1
    assert ("payments", "LedgerMismatch") not in _left(cli_db)
    with cli_db.connect() as conn:
        [entry] = entries(conn, action="failed.flush")
    assert entry.reason == "INC-7 closed"


def test_flush_by_job_and_exception(cli_db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    _insert(cli_db)
    args = ["failed", "flush", "--job", "generate-product-blurhash", "--exception", "OSError"]
    assert main([*args, "--yes", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["deleted"] == 1
    assert ("media", "OSError") not in _left(cli_db)
    assert ("media", "UnidentifiedImageError") in _left(cli_db)


def test_a_big_flush_goes_in_chunks_each_audited(engine: Engine) -> None:
    rows = [("media", "generate-product-blurhash", "OSError", 100)] * 23
    ids = _insert(engine, rows)
    done = flush(engine, FailedFilter(), dict(GROUPS), actor="ops", reason=None, chunk=5)
    assert done.deleted == 23
    with engine.connect() as conn:
        audited = entries(conn, action="failed.flush", limit=100)
        assert conn.execute(select(func.count()).select_from(f)).scalar_one() == 0
    assert len(audited) == 5  # 5 + 5 + 5 + 5 + 3
    assert sum(json.loads(e.details)["deleted"] for e in audited) == 23
    assert audited[-1].target == f"failed_jobs:{ids[0]}-{ids[4]}"


def test_list_filters_by_job_and_exception(
    cli_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _insert(cli_db)
    args = ["failed", "list", "--job", "send-appointment-reminder", "--exception"]
    assert main([*args, "ReminderNotSent", "--json"]) == EXIT_OK
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["job_name"], x["exception_class"]) for x in listed] == [
        ("send-appointment-reminder", "ReminderNotSent")
    ] * 2
    assert main([*args, "NoSuchError", "--json"]) == EXIT_OK
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("72", "has no unit"),
        ("3.5", "has no unit"),
        ("soon", "is not a duration"),
        ("-5h", "is not a duration"),
        ("", "is not a duration"),
        ("40000d", "longer than 100 years"),
        ("72h; DROP TABLE failed_jobs", "is not a duration"),
    ],
)
def test_a_bad_older_than_is_refused_and_deletes_nothing(
    cli_db: Engine, capsys: pytest.CaptureFixture[str], value: str, words: str
) -> None:
    _insert(cli_db)
    assert main(["failed", "flush", "--older-than", value, "--yes"]) == EXIT_USAGE
    assert words in capsys.readouterr().err
    assert len(_left(cli_db)) == len(ROWS)


@pytest.fixture
def sqlite_cli(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Engine:
    from infra.db import make_engine
    from infra.migrate import upgrade

    url = f"sqlite:///{tmp_path}/flush.db"
    monkeypatch.setenv("DATABASE_URL", url)
    engine = make_engine(url)
    upgrade(engine)
    _insert(engine)
    return engine


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(max_size=30))
def test_any_older_than_text_is_a_clear_refusal_or_a_bounded_flush(
    sqlite_cli: Engine, value: str
) -> None:
    """Whatever is typed, exit 0 or 2 (never a traceback); a refusal changes nothing, and
    no flush touches the reviewed group."""
    before = len(_left(sqlite_cli))
    code = main(["failed", "flush", "--older-than", value, "--yes", "--json"])
    assert code in {EXIT_OK, EXIT_USAGE}
    left = _left(sqlite_cli)
    if code == EXIT_USAGE:
        assert len(left) == before
    else:
        assert ("payments", "LedgerMismatch") in left  # the reviewed group is never flushed

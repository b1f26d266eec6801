"""The inputs that gave 500s (issue 23): times at the ends of the calendar on the lists, in
cursors, in a flush and a bulk retry; a NUL or an outer space in the park form's key. Each is
a 400 that keeps what the operator typed, and changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from outbox.schema import audit_log_table, failed_jobs_table, parked_keys_table
from tests.dashboard_helpers import OPERATOR, client_for, dashboard_config, seed_failed, sign_in

pytestmark = pytest.mark.integration

EARLY = "0001-01-01T00:00:00+14:00"
LATE = "9999-12-31T23:59:59-14:00"


@pytest.mark.parametrize("moment", [EARLY, LATE])
def test_times_past_the_calendar_on_the_lists_are_a_400_with_the_filters_kept(
    engine: Engine, moment: str
) -> None:
    client = client_for(dashboard_config(engine))
    sign_in(client, OPERATOR)
    range_error = "between the years 1000 and 9999"
    for path, params, says in (
        ("/failed", {"since": moment, "search": "acme-kept", "exception": "K"}, range_error),
        ("/jobs", {"since": moment, "search": "acme-kept"}, range_error),
        ("/jobs", {"after": f"{moment}|ev-1", "search": "acme-kept"}, "after: a cursor"),
    ):
        answer = client.get(path, params=params)
        assert answer.status_code == 400, (path, params, answer.text[:300])
        assert says in answer.text
        assert 'value="acme-kept"' in answer.text  # the filter form keeps what was typed
    batches = client.get("/batches", params={"before": "0001-01-01", "state": "running"})
    assert batches.status_code == 400 and "between the years" in batches.text
    assert "selected>running" in batches.text


def test_hostile_times_in_a_flush_or_a_bulk_retry_are_a_400_that_changes_nothing(
    engine: Engine,
) -> None:
    seed_failed(engine, n=2)
    client = client_for(dashboard_config(engine))
    token = sign_in(client, OPERATOR)
    for path, data in (
        ("/failed/flush", {"older_than": EARLY}),
        ("/failed/flush", {"older_than": LATE}),
        ("/failed/retry", {"scope": "filter", "since": EARLY, "group": "analytics"}),
        ("/failed/bulk/delete", {"since": LATE, "group": "analytics"}),
    ):
        answer = client.post(path, data={"csrf_token": token, **data})
        assert answer.status_code == 400, (path, data, answer.text[:300])
        assert "between the years 1000 and 9999" in answer.text
        assert "That did not work" in answer.text
        kept = data.get("since") or data["older_than"]
        assert kept in answer.text  # what was typed is shown back
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(failed_jobs_table)).scalar() == 2


@pytest.mark.parametrize(
    ("key", "says"),
    [("ord\x001", "U+0000"), (" ord-1", "starts or ends with a space"),
     ("ord-1 ", "starts or ends with a space"), ("ord\u202e1", "U+202E")],
)  # fmt: skip
def test_the_park_form_refuses_a_key_the_id_rule_refuses(
    engine: Engine, key: str, says: str
) -> None:
    client = client_for(dashboard_config(engine))
    token = sign_in(client, OPERATOR)
    answer = client.post("/keys/park", data={"csrf_token": token, "key": key, "reason": "hold it"})
    assert answer.status_code == 400, answer.text[:300]
    assert says in answer.text
    # A release looks for the key as stored (an older key may break today's rule), but a
    # NUL can never be stored: 400; any other key that is not parked changes nothing.
    answer = client.post(
        "/keys/release", data={"csrf_token": token, "key": key, "reason": "let go"}
    )
    assert answer.status_code == (400 if "\x00" in key else 200), answer.text[:300]
    if "\x00" not in key:
        assert "Nothing done" in answer.text
    with engine.connect() as conn:
        assert conn.execute(select(parked_keys_table.c.key)).all() == []
        actions = conn.execute(select(audit_log_table.c.action)).scalars().all()
    assert "park" not in actions

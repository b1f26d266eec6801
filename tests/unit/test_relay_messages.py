"""Outbox row -> Kafka record: the CloudEvents time of originals and of copies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outbox.envelope import canonical_json
from relay.messages import UnsendableRow, to_message

CREATED = datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC)


def _row(headers: dict[str, str]) -> tuple[object, ...]:
    return (7, "ev-1", "order-events", "order-1", 0, "order.placed", "{}",
            canonical_json(headers), CREATED)  # fmt: skip


def test_an_original_is_sent_with_its_creation_time() -> None:
    message = to_message(_row({"tenant_id": "acme"}), b"/src")
    assert dict(message.headers)["ce_time"] == b"2026-12-02T10:00:00.123456Z"


def test_a_copy_is_sent_with_its_original_time_once_and_its_copy_time_apart() -> None:
    headers = {"ce_time": "2026-11-01T08:00:00.000001Z", "x-copied-at": "2026-12-02T10:00:00Z"}
    message = to_message(_row(headers), b"/src")
    names = [name for name, _ in message.headers]
    assert names.count("ce_time") == 1
    assert dict(message.headers)["ce_time"] == b"2026-11-01T08:00:00.000001Z"
    assert dict(message.headers)["x-copied-at"] == b"2026-12-02T10:00:00Z"


def test_headers_that_are_not_an_object_make_the_row_unsendable() -> None:
    row = (*_row({})[:7], "[1, 2]", CREATED)
    with pytest.raises(UnsendableRow, match="not a JSON object"):
        to_message(row, b"/src")

"""The log redactor against the cases that once leaked, in one table."""

from __future__ import annotations

from typing import Any

import pytest

from infra.logs import redact, redact_text

SECRET = "s3cr3tPa55"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dsn", f"postgresql+psycopg://app:{SECRET}@db/app"),
        ("url", f"mysql+pymysql://root:{SECRET}@h:3306/d"),
        ("nested", {"deep": {"password": SECRET}}),
        ("listed", [{"token": SECRET}, f"password={SECRET}"]),
        ("raw", f"password={SECRET}".encode()),
        ("pwd", SECRET),
        ("passwd", SECRET),
        ("credentials", SECRET),
        ("auth", SECRET),
        ("cookie", SECRET),
        ("private_key", SECRET),
        ("apiKey", SECRET),
        ("message", f"connecting with secret={SECRET} failed"),
    ],
)
def test_no_secret_survives_redaction(field: str, value: Any) -> None:
    line = redact(None, "info", {"event": "x", field: value})
    assert SECRET not in repr(line)
    assert "s3cr3" not in repr(line)  # not even the first characters


@pytest.mark.parametrize(
    "address", ["wile.e.coyote@example.com", "юзер@пример.рф", "a.b+tag@sub.example.org"]
)
def test_no_full_email_address_survives(address: str) -> None:
    line = redact(None, "info", {"event": "x", "customer": address, "note": f"to {address}"})
    assert address not in repr(line)
    assert address.split("@")[1] in line["customer"]  # the domain stays: enough to triage


def test_ids_and_plain_words_are_left_alone() -> None:
    line = redact(None, "info", {"event": "job_handled", "order_id": "o-1", "job": "x"})
    assert line == {"event": "job_handled", "order_id": "o-1", "job": "x"}
    assert redact_text("nothing to hide") == "nothing to hide"

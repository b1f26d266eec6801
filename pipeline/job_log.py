"""The consumer's `job_handled` lines, a batch at a time.

One JSON line per handled message is the worker's canonical record, and at thousands of
messages a second its cost counts: through structlog's processor chain each line cost more
than running a trivial job (bench/consume.py). This writer renders a whole batch with
orjson, puts it through the same redaction as every other line, and writes it to stderr
with one write and one flush. The lines are the ones structlog would write (`event`,
`level`, `timestamp`, the group and the line's fields); the timestamp is the batch's, taken
when its outcome became durable.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from infra.logs import redact

__all__ = ["batch_job_log"]


def batch_job_log(level: str, fmt: str) -> Callable[[str, Sequence[dict[str, Any]]], None] | None:
    """A batch writer for JSON logs at info level or below; None otherwise (the worker
    then logs each line through structlog, which knows the console format)."""
    if fmt != "json" or level.lower() not in ("debug", "info"):
        return None

    def write(group: str, lines: Sequence[dict[str, Any]]) -> None:
        if not lines:
            return
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        rendered = []
        for line in lines:
            record: dict[str, Any] = {
                "group": group,
                **line,
                "event": "job_handled",
                "level": "info",
                "timestamp": stamp,
            }
            if "error" in record or "reason" in record:  # free text: redact as usual
                record = dict(redact(None, "info", record))
            rendered.append(orjson.dumps(record))
        sys.stderr.write(b"\n".join(rendered).decode() + "\n")
        sys.stderr.flush()

    return write

"""Bulk actions on failed jobs: what a filter matches, counted and bound for a confirmation,
then done in the background in chunks of short transactions.

The preview counts the rows the filter matches up to the newest id at that moment (`upto`):
rows that fail later are not part of what the operator saw, so they are never acted on. The
confirmation carries a signed token of (action, filter, count, upto, user); if the filter
submitted with it is not the one previewed, or the count is no longer what the page said
(someone else acted meanwhile), nothing is done and the operator is asked again.

A run does CHUNK rows per transaction: the chunk's retries or deletes, its audit row (with
the operator's reason and the run's id) and the run's progress commit together. So a page
never waits on a long transaction, a statement timeout bounds each chunk, and a run that
stops half-way leaves the log and the progress exactly as far as it got.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Connection, Engine, func, select

from consumers.failed_jobs import FailedFilter, ReviewRequired, forget, retry
from consumers.groups import Group
from outbox import bulk_runs
from outbox.audit import record as audit
from outbox.bulk_runs import RunState
from outbox.envelope import canonical_json
from outbox.schema import failed_jobs_table as f
from outbox.types import utcnow
from web.dashboard.failed_jobs import Acted, FailedQuery, audit_action

__all__ = ["CHUNK", "Preview", "Tokens", "preview", "run", "start"]

CHUNK = 500
TOKEN_MAX_AGE_S = 15 * 60
ACTIONS = ("retry", "delete")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preview:
    """What a bulk action would act on: `count` rows of the filter with id <= `upto`."""

    action: str
    which: FailedQuery
    count: int
    upto: int
    # Review-before-retry groups among the rows (they need a reviewer).
    reviewed: tuple[str, ...]

    def claim(self, user: str) -> dict[str, Any]:
        return {
            "action": self.action,
            "filter": self.which.as_dict(),
            "count": self.count,
            "upto": self.upto,
            "user": user,
        }


def preview(
    conn: Connection, action: str, which: FailedQuery, groups: Mapping[str, Group]
) -> Preview:
    top = conn.execute(select(func.max(f.c.id))).scalar() or 0
    return count_upto(conn, action, which, groups, int(top))


def count_upto(
    conn: Connection, action: str, which: FailedQuery, groups: Mapping[str, Group], upto: int
) -> Preview:
    bounded = replace(which, upto=upto)
    count = int(
        conn.execute(
            select(func.count()).select_from(bounded.apply(select(f.c.id)).subquery())
        ).scalar_one()
    )
    reviewed = [g for g, group in groups.items() if group.review_before_retry]
    found: list[str] = []
    if reviewed and count:
        found = sorted(
            conn.execute(
                bounded.apply(select(f.c.group_name)).where(f.c.group_name.in_(reviewed)).distinct()
            ).scalars()
        )
    return Preview(action, which, count, upto, tuple(found))


class Tokens:
    """Signs what a confirmation page showed; reads it back only unchanged and fresh."""

    def __init__(self, key: str) -> None:
        self._signer = URLSafeTimedSerializer(key, salt="outbox-bulk-confirm")

    def issue(self, shown: Preview, user: str) -> str:
        return self._signer.dumps(shown.claim(user))

    def read(self, token: str) -> dict[str, Any] | None:
        try:
            found = self._signer.loads(token, max_age=TOKEN_MAX_AGE_S)
        except (BadSignature, ValueError, TypeError):
            return None
        return found if isinstance(found, dict) else None


def start(
    engine: Engine,
    shown: Preview,
    *,
    groups: Mapping[str, Group],
    shards: int,
    acted: Acted,
    chunk: int = CHUNK,
    background: bool = True,
) -> str:
    """Record the run (and its confirmation in the audit log) and start it; its id."""
    run_id = str(uuid.uuid4())
    described = f"{shown.action} {shown.count:,} failed job(s) of {shown.which.describe()}"
    with engine.begin() as conn:
        bulk_runs.start(
            conn, run_id, now=acted.now, actor=acted.actor, action=shown.action,
            target="failed_jobs", filter=canonical_json(shown.which.as_dict()), described=described,
            reason=acted.why, total=shown.count,
            reviewed_by=acted.review.reviewed_by if acted.review else None,
        )  # fmt: skip
        audit(
            conn,
            at=acted.now,
            actor=acted.actor,
            action=f"bulk-{shown.action}",
            target=f"bulk:{run_id}",
            reason=acted.why,
            details={
                "filter": shown.which.as_dict(),
                "count": shown.count,
                "upto": shown.upto,
                "via": "dashboard",
            },
        )
    which = replace(shown.which, upto=shown.upto)
    args = (engine, run_id, shown.action, which, groups, shards, acted, chunk)
    if background:
        threading.Thread(target=run, args=args, name=f"bulk-{run_id[:8]}", daemon=True).start()
    else:
        run(*args)
    return run_id


def run(  # noqa: PLR0917 - a thread's target
    engine: Engine,
    run_id: str,
    action: str,
    which: FailedQuery,
    groups: Mapping[str, Group],
    shards: int,
    acted: Acted,
    chunk: int = CHUNK,
) -> int:
    """Act on the filter's rows, `chunk` per transaction; the number of rows acted on."""
    done, last, chunks = 0, 0, 0
    try:
        while True:
            with engine.begin() as conn:
                # Locked, skipping rows another run holds: two runs of one filter (a double
                # click, two tabs) never retry a job twice. SQLite has one writer anyway.
                chosen = which.apply(select(f.c.id)).where(f.c.id > last).order_by(f.c.id)
                ids = list(
                    conn.execute(chosen.limit(chunk).with_for_update(skip_locked=True)).scalars()
                )
                if not ids:
                    break
                last = ids[-1]
                acted_on = _act(conn, action, ids, groups, shards, acted)
                chunks += 1
                audit_action(
                    conn, f"failed-{action}", replace(acted, now=utcnow()), acted_on,
                    {"run": run_id, "chunk": chunks},
                )  # fmt: skip
                bulk_runs.progress(conn, run_id, len(acted_on), utcnow())
            done += len(acted_on)
    except ReviewRequired as exc:
        _finish(engine, run_id, RunState.FAILED, f"stopped: {exc}")
        return done
    except Exception as exc:  # a run that dies says why on its page
        log.exception("bulk run %s failed", run_id)
        _finish(engine, run_id, RunState.FAILED, f"stopped after {done:,}: {type(exc).__name__}")
        return done
    verb = {"retry": "Retried", "delete": "Deleted"}[action]
    _finish(engine, run_id, RunState.DONE, f"{verb} {done:,} failed job(s) in {chunks} chunk(s).")
    return done


def _act(  # noqa: PLR0917
    conn: Connection,
    action: str,
    ids: list[int],
    groups: Mapping[str, Group],
    shards: int,
    acted: Acted,
) -> list[int]:
    chosen = FailedFilter(ids=tuple(ids))
    if action == "retry":
        return retry(conn, chosen, dict(groups), shards=shards, review=acted.review)
    forget(conn, chosen)
    return ids


def _finish(engine: Engine, run_id: str, state: RunState, message: str) -> None:
    with engine.begin() as conn:
        bulk_runs.finish(conn, run_id, state, message, utcnow())

"""What the relay sends next: the due rows of the shards it holds, keys held back whole.

A key is held back while its head row waits: deferred after a failed send, or dispatched
with a delay (`available_at` later), or parked by an operator (`outbox park`). Rows of a
held-back key are never sent ahead of its head, so one aggregate's events reach Kafka in
version order. Each shard gets a quota of the batch; shards that filled theirs get a
bigger share of the next one. A shard whose claim came back full of held-back rows only
(its head is more delayed keys than a claim can skip) is claimed once more for its due
rows (`store.claim_due`, ADR 010).

Each shard's claim starts at its cursor (`relay.cursors`, ADR 013): the rows published
before it are never read again, so the claim's cost does not grow with the dead index
entries a long transaction elsewhere keeps VACUUM from removing. Held-back rows the cursor
passed are remembered by key and their shard's cursor goes back to them when released.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import ProgrammingError

from outbox import partitions
from relay import store
from relay.cursors import Cursors

__all__ = ["Claimer"]

log = structlog.get_logger(__name__)

# At most this many held-back keys are excluded inside the claim's SQL.
SKIP_IN_SQL = 500
# A row claimed this long ago (monotonic seconds) bounds the ids a transaction still open
# can commit below; a longer one is found by the sweep, at most SWEEP_EVERY_S later.
SETTLE_S = 2.0
SWEEP_EVERY_S = 10.0
# PostgreSQL: how often the relay makes sure partitions lie ahead of the ids (ADR 013).
PARTITIONS_EVERY_S = 10.0


class Claimer:
    def __init__(
        self,
        engine: Engine,
        batch_size: int,
        *,
        settle_s: float = SETTLE_S,
        sweep_every_s: float = SWEEP_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.blocked: dict[str, datetime] = {}  # key -> when its waiting head is due
        self.starved_claims = 0  # claims past a shard head of delayed rows
        self.cursors = Cursors(settle_s=settle_s, sweep_every_s=sweep_every_s, monotonic=monotonic)
        self._monotonic = monotonic
        self._partitions_due = 0.0
        self._quota: dict[int, int] = {}
        self._parked: set[str] = set()
        self._sent: list[store.Claimed] = []  # the rows the last claim gave to send

    def hold_back(
        self, keys: set[str], until: datetime, rows: Sequence[store.Claimed] | None = None
    ) -> None:
        """Keys whose head row was just deferred until `until`. `rows`: the rows claimed
        but not written since (by default, the last claim's): those of these keys stay
        pending, and their shard's cursor goes back to them when the keys are due."""
        self.blocked.update(dict.fromkeys(keys, until))
        for row in self._sent if rows is None else rows:
            if row.key in keys:
                self.cursors.track(row)

    def claim(
        self, held: dict[int, int], now: datetime, in_flight: Sequence[store.Claimed] = ()
    ) -> list[store.Claimed]:
        """The rows to send now, in id order per shard (`held`: shard -> lease epoch),
        leaving out the rows of `in_flight` (the batch being sent while this one is
        claimed, ADR 003); each shard's cursor stays at or below its first row in flight
        until that batch's outcome is written."""
        flying: dict[int, set[int]] = {}
        for row in in_flight:
            flying.setdefault(row.shard, set()).add(row.id)
        if self._monotonic() >= self._partitions_due:
            # The only outbox process that runs all the time keeps the partitions ahead.
            self._partitions_due = self._monotonic() + PARTITIONS_EVERY_S
            try:
                partitions.ensure_ahead(self.engine)
            except ProgrammingError as exc:
                # Not the relay's job to stop for: writes land in the DEFAULT partition.
                log.warning("relay_partitions_failed", error=str(exc.orig))
        due_again = [k for k, t in self.blocked.items() if t <= now]
        self.blocked = {k: t for k, t in self.blocked.items() if t > now}
        self.cursors.follow(held)
        # A key goes back to its shard's cursor only when nothing holds it any more.
        self.cursors.release(k for k in due_again if k not in self._parked)
        base = max(1, self.batch_size // len(held))
        quotas = {s: self._quota.get(s, base) for s in held}
        with self.engine.connect() as conn:
            # Parked keys (`outbox park`) are read before every claim, so a park holds from
            # its commit on; only a batch already in flight can still send the key's rows.
            parked = set(store.parked_keys(conn))
            self.cursors.release(k for k in self._parked - parked if k not in self.blocked)
            self._parked = parked
            skip = [*parked, *self.blocked][:SKIP_IN_SQL]
            rows = store.claim(conn, quotas, skip, self.cursors.positions(), flying)
        counts: dict[int, int] = {}
        for row in rows:
            counts[row.shard] = counts.get(row.shard, 0) + 1
        full = [s for s in held if counts.get(s, 0) >= quotas[s]]
        self._quota = {s: max(base, self.batch_size // len(full)) for s in full}
        due = self._due(rows, parked, now)
        self._track(rows, parked)
        pinned = {s: min(ids) for s, ids in flying.items()}
        self.cursors.advance(rows, {row.id for row in due}, quotas, pinned)
        sending = {row.shard for row in due}
        starved = [s for s in full if s not in sending]
        if starved:
            with self.engine.connect() as conn:
                rescued = [r for s in starved for r in store.claim_due(conn, s, quotas[s], now)]
            if flying:
                rescued = [r for r in rescued if r.id not in flying.get(r.shard, ())]
            due.extend(self._due(rescued, parked, now))
            self._track(rescued, parked)
            self.starved_claims += len(starved)
        self._sent = due
        return due

    def _track(self, rows: list[store.Claimed], parked: set[str]) -> None:
        """Remember where each held-back key starts. Every row of the key counts, also one
        given to send before a later row held the key back: it stays pending if the broker
        does not acknowledge it, and the key's rows are excluded from claims meanwhile."""
        for row in rows:
            if row.key in self.blocked or row.key in parked:
                self.cursors.track(row)

    def _due(
        self, rows: list[store.Claimed], parked: set[str], now: datetime
    ) -> list[store.Claimed]:
        due = []
        for row in rows:
            if row.key in self.blocked or row.key in parked:
                continue
            if row.available_at > now:
                self.blocked[row.key] = row.available_at
                continue
            due.append(row)
        return due

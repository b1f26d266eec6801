"""What the relay sends next: the due rows of the shards it holds, keys held back whole.

A key is held back while its head row waits: deferred after a failed send, or dispatched
with a delay (`available_at` later), or parked by an operator (`outbox park`). Rows of a
held-back key are never sent ahead of its head, so one aggregate's events reach Kafka in
version order. Each shard gets a quota of the batch; shards that filled theirs get a
bigger share of the next one. A shard whose claim came back full of held-back rows only
(its head is more delayed keys than a claim can skip) is claimed once more for its due
rows (`store.claim_due`, ADR 010).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from relay import store

__all__ = ["Claimer"]

# At most this many held-back keys are excluded inside the claim's SQL.
SKIP_IN_SQL = 500


class Claimer:
    def __init__(self, engine: Engine, batch_size: int) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.blocked: dict[str, datetime] = {}  # key -> when its waiting head is due
        self.starved_claims = 0  # claims past a shard head of delayed rows
        self._quota: dict[int, int] = {}

    def hold_back(self, keys: set[str], until: datetime) -> None:
        """Keys whose head row was just deferred until `until`."""
        self.blocked.update(dict.fromkeys(keys, until))

    def claim(self, held: dict[int, int], now: datetime) -> list[store.Claimed]:
        """The rows to send now, in id order per shard (`held`: shard -> lease epoch)."""
        self.blocked = {k: t for k, t in self.blocked.items() if t > now}
        base = max(1, self.batch_size // len(held))
        quotas = {s: self._quota.get(s, base) for s in held}
        with self.engine.connect() as conn:
            # Parked keys (`outbox park`) are read before every claim, so a park holds from
            # its commit on; only a batch already in flight can still send the key's rows.
            parked = set(store.parked_keys(conn))
            rows = store.claim(conn, quotas, [*parked, *self.blocked][:SKIP_IN_SQL])
        counts: dict[int, int] = {}
        for row in rows:
            counts[row.shard] = counts.get(row.shard, 0) + 1
        full = [s for s in held if counts.get(s, 0) >= quotas[s]]
        self._quota = {s: max(base, self.batch_size // len(full)) for s in full}
        due = self._due(rows, parked, now)
        sending = {row.shard for row in due}
        starved = [s for s in full if s not in sending]
        if starved:
            with self.engine.connect() as conn:
                rescued = [r for s in starved for r in store.claim_due(conn, s, quotas[s], now)]
            due.extend(self._due(rescued, parked, now))
            self.starved_claims += len(starved)
        return due

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

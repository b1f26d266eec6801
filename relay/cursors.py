"""Where each held shard's claim starts: the lowest id that may still be pending there.

The claim reads `status = 'pending' AND shard = :s AND id >= :cursor` in id order, so its
index range scan starts at the cursor and never reads the entries of rows published
before it. Those entries stay in ix_outbox_status_shard_id until VACUUM removes them, and
VACUUM can remove none while a transaction elsewhere holds an old snapshot (the xmin
horizon): from the bottom, a shard's claim read 2,283 buffers instead of 4 (ADR 013).

What the cursor may pass, and why no pending row is lost:

- Rows we claimed and sent: the cursor never passes the first due row of the last claim
  (a row the broker did not acknowledge stays pending and is claimed again from there),
  nor the first row of the batch in flight while the next one is claimed (`pinned`).
- Held-back rows (deferred, delayed, parked, and the later rows of their keys): passed,
  but the lowest id seen of each held-back key is kept (`track`); when the key is released
  (due, unparked) the shard's cursor goes back to it (`release`). A parked key whose rows
  the claim never returned (excluded in its SQL) is released with every shard's cursor
  back at 0.
- Rows not yet visible: ids are taken before commit, so a transaction still open can
  commit a lower id than rows already published. The cursor passes an id only when a row
  at or above it was seen by a claim at least `settle_s` ago (the relay's own monotonic
  clock): a row below it must then belong to a transaction that took its id before that
  row's and is still open `settle_s` later. Such rows (a long transaction that wrote to
  the outbox) are found by the sweep: every `sweep_every_s` each shard's claim starts
  from 0 once again (one shard per claim, so the sweeps spread out).
- A lease that changes hands: a shard acquired (or re-acquired under a new epoch) starts
  at 0, so a new holder derives its cursor from the table, not from anyone's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from relay.store import Claimed

__all__ = ["Cursors"]


@dataclass(slots=True)
class _Shard:
    epoch: int
    swept_at: float  # when `at` was last put back to 0
    at: int = 0
    # (monotonic time first seen, id) of recently claimed rows not yet `settle_s` old.
    recent: list[tuple[float, int]] = field(default_factory=list)
    settled: int = 0  # the highest id claimed at least settle_s ago


class Cursors:
    def __init__(
        self, *, settle_s: float, sweep_every_s: float, monotonic: Callable[[], float]
    ) -> None:
        self.settle_s = settle_s
        self.sweep_every_s = sweep_every_s
        self._monotonic = monotonic
        self._shards: dict[int, _Shard] = {}
        # Held-back key -> (its shard, the lowest id of it a claim returned while held).
        self._heads: dict[str, tuple[int, int]] = {}
        self.sweeps = 0

    def follow(self, held: Mapping[int, int]) -> None:
        """Start every newly held shard (or one held under a new epoch) at 0, drop the
        shards no longer held, and sweep the stalest shard when it is due."""
        now = self._monotonic()
        for shard in [s for s, st in self._shards.items() if held.get(s) != st.epoch]:
            del self._shards[shard]
        for shard, epoch in held.items():
            if shard not in self._shards:
                # Staggered, so that the shards' sweeps do not fall on the same claim.
                offset = self.sweep_every_s * (shard % 16) / 16
                self._shards[shard] = _Shard(epoch=epoch, swept_at=now - offset)
        if self._shards:
            stalest = min(self._shards.values(), key=lambda st: st.swept_at)
            if now - stalest.swept_at >= self.sweep_every_s:
                stalest.at, stalest.swept_at = 0, now
                self.sweeps += 1

    def positions(self) -> dict[int, int]:
        """Each held shard's cursor: its claim reads ids from there on."""
        return {s: st.at for s, st in self._shards.items()}

    def track(self, row: Claimed) -> None:
        """`row` is pending and held back: remember the lowest such id of its key."""
        head = self._heads.get(row.key)
        if head is None or row.id < head[1]:
            self._heads[row.key] = (row.shard, row.id)

    def release(self, keys: Iterable[str]) -> None:
        """These keys may be sent again: their shards' cursors go back to their heads."""
        for key in keys:
            head = self._heads.pop(key, None)
            if head is None:
                # Never seen (a park the claim excluded in SQL): it could be anywhere.
                for st in self._shards.values():
                    st.at = 0
                continue
            shard = self._shards.get(head[0])
            if shard is not None:
                shard.at = min(shard.at, head[1])

    def advance(
        self,
        rows: list[Claimed],
        due: set[int],
        quotas: Mapping[int, int],
        pinned: Mapping[int, int] | None = None,
    ) -> None:
        """Move each shard's cursor after a claim that returned `rows` (in id order per
        shard), of which the ids in `due` will be sent; every other row is tracked.
        `pinned`: per shard, the lowest id of a batch still in flight (the claim left it
        out): the cursor stays at or below it until that batch's outcome is written."""
        now = self._monotonic()
        by_shard: dict[int, list[Claimed]] = {}
        for row in rows:
            by_shard.setdefault(row.shard, []).append(row)
        for shard, st in self._shards.items():
            got = by_shard.get(shard, [])
            st.recent.extend((now, row.id) for row in got)
            old = [i for t, i in st.recent if now - t >= self.settle_s]
            if old:
                st.settled = max(st.settled, *old)
                st.recent = [(t, i) for t, i in st.recent if i > st.settled]
            if not st.settled:
                continue
            bound = st.settled + 1
            first_due = next((row.id for row in got if row.id in due), None)
            if first_due is not None:
                bound = min(bound, first_due)
            if got and len(got) >= quotas.get(shard, 0):
                # Rows past the quota were not read: they may be pending, untracked.
                bound = min(bound, got[-1].id + 1)
            if pinned and shard in pinned:
                bound = min(bound, pinned[shard])
            st.at = max(st.at, bound)

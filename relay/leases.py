"""Shard leases: which relay instance publishes which shard.

Every instance registers and heartbeats in `relay_instances`. The alive instances (a
heartbeat within the TTL), sorted by id, split the shards round-robin: shard s belongs to
alive[s % len(alive)]. Each instance acquires the free or expired leases of its share and
releases the ones that are no longer its share, so shares rebalance when an instance joins
or leaves, and a dead instance's leases are taken over once they expire.

Every acquisition increments the shard's epoch. The relay claims rows under the epochs it
holds and marks them with those epochs; the mark statement checks them (fencing), so a
holder that lost its lease while sending cannot mark rows. Times come from the relays'
clocks: keep them synchronised (NTP), a skew eats into the TTL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Connection, Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from outbox.schema import relay_instances_table as instances
from outbox.schema import relay_leases_table as leases
from outbox.types import utcnow

__all__ = ["LeaseKeeper", "new_instance_id", "share_of"]

log = structlog.get_logger(__name__)


def new_instance_id() -> str:
    return f"{socket.gethostname()[:64]}-{os.getpid()}-{secrets.token_hex(4)}"


def share_of(instance_id: str, alive: list[str], shards: int) -> set[int]:
    """The shards `instance_id` should hold when `alive` (any order) are the live ones."""
    ordered = sorted(set(alive) | {instance_id})
    index = ordered.index(instance_id)
    return {s for s in range(shards) if s % len(ordered) == index}


class LeaseKeeper:
    """Holds this instance's leases. `tick()` heartbeats, renews and rebalances; the relay
    runs it on a thread every `interval_s` so that a long flush does not lose the leases.
    Releases wait for the relay loop (`release_pending`), which owns the batch in flight."""

    def __init__(
        self,
        engine: Engine,
        *,
        shards: int,
        ttl_s: float,
        instance_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("the lease TTL must be positive")
        self.engine = engine
        self.shards = shards
        self.ttl = timedelta(seconds=ttl_s)
        self.instance_id = instance_id or new_instance_id()
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[int, int] = {}  # shard -> epoch
        self._to_release: set[int] = set()
        self._valid_until: datetime | None = None
        self.alive_instances = 0

    @property
    def interval_s(self) -> float:
        return max(0.1, min(self.ttl.total_seconds() / 3, 2.0))

    def held(self) -> dict[int, int]:
        """Shards this instance may publish now, with their epochs (a copy)."""
        with self._lock:
            if self._valid_until is None or self._clock() >= self._valid_until:
                return {}
            return {s: e for s, e in self._held.items() if s not in self._to_release}

    def register(self) -> None:
        """Join the live instances (again, after a step-back or a failed first try)."""
        now = self._clock()
        with self.engine.begin() as conn:
            # Idempotent: a retry after a lost connection may find its own row committed.
            conn.execute(delete(instances).where(instances.c.instance_id == self.instance_id))
            conn.execute(
                insert(instances).values(
                    instance_id=self.instance_id,
                    hostname=socket.gethostname()[:255],
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                    progress_at=now,
                )
            )
            existing = set(conn.execute(select(leases.c.shard)).scalars())
        missing = [
            {"shard": shard, "owner": None, "epoch": 0}
            for shard in range(self.shards)
            if shard not in existing
        ]
        if missing:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(leases), missing)
            except IntegrityError:
                # Another instance starting at the same moment created some: the rest one by one.
                for row in missing:
                    with contextlib.suppress(IntegrityError), self.engine.begin() as conn:
                        conn.execute(insert(leases).values(**row))
        log.info("relay_registered", instance_id=self.instance_id, shards=self.shards)

    def tick(
        self, *, progress_at: datetime | None = None, last_published_at: datetime | None = None
    ) -> None:
        """Heartbeat (with the relay's progress, for `outbox coroner`), renew what is held,
        acquire the free part of this instance's share."""
        now = self._clock()
        expires = now + self.ttl
        beat: dict[str, datetime] = {"heartbeat_at": now}
        if progress_at is not None:
            beat["progress_at"] = progress_at
        if last_published_at is not None:
            beat["last_published_at"] = last_published_at
        with self.engine.begin() as conn:
            conn.execute(
                update(instances).where(instances.c.instance_id == self.instance_id).values(**beat)
            )
            conn.execute(
                update(leases)
                .where(leases.c.owner == self.instance_id, leases.c.expires_at > now)
                .values(expires_at=expires)
            )
            alive = list(
                conn.execute(
                    select(instances.c.instance_id).where(instances.c.heartbeat_at > now - self.ttl)
                ).scalars()
            )
            wanted = share_of(self.instance_id, alive, self.shards)
            with self._lock:
                held_before = dict(self._held)
            free = [s for s in wanted if s not in held_before]
            if free:
                conn.execute(
                    update(leases)
                    .where(
                        leases.c.shard.in_(free),
                        or_(leases.c.owner.is_(None), leases.c.expires_at <= now),
                    )
                    .values(owner=self.instance_id, epoch=leases.c.epoch + 1, expires_at=expires)
                )
            held_now = conn.execute(
                select(leases.c.shard, leases.c.epoch).where(
                    leases.c.owner == self.instance_id, leases.c.expires_at > now
                )
            )
            # dict(held_now) would mistake the Result for a mapping (it has keys()).
            mine: dict[int, int] = {shard: epoch for shard, epoch in held_now}  # noqa: C416
        lost = set(held_before) - set(mine)
        gained = set(mine) - set(held_before)
        with self._lock:
            self._held = mine
            self._to_release = {s for s in mine if s not in wanted}
            # Stop sending a little before the lease can be taken over.
            self._valid_until = now + self.ttl * 0.8
            self.alive_instances = len(set(alive) | {self.instance_id})
        if lost:
            log.warning("relay_leases_lost", shards=sorted(lost), instance_id=self.instance_id)
        if gained:
            log.info("relay_leases_acquired", shards=sorted(gained), held=len(mine))

    def release_pending(self, busy: Collection[int] = ()) -> None:
        """Give back the shards that are now another instance's share (between batches),
        except the `busy` ones (rows of them in flight): those at a later call."""
        with self._lock:
            shards = sorted(s for s in self._to_release if s not in busy)
        if shards:
            self._release(shards)
            log.info("relay_leases_released", shards=shards, reason="rebalance")

    def release_all(self, reason: str = "shutdown") -> None:
        """On shutdown (or a stall): free every lease at once and leave the live instances,
        so others take over now."""
        with self._lock:
            shards = sorted(self._held)
        with self.engine.begin() as conn:
            self._release_in(conn, shards)
            conn.execute(delete(instances).where(instances.c.instance_id == self.instance_id))
        with self._lock:
            self._held = {}
            self._to_release = set()
        log.info("relay_leases_released", shards=shards, reason=reason)

    def _release(self, shards: list[int]) -> None:
        with self.engine.begin() as conn:
            self._release_in(conn, shards)
        with self._lock:
            for shard in shards:
                self._held.pop(shard, None)
                self._to_release.discard(shard)

    def _release_in(self, conn: Connection, shards: list[int]) -> None:
        if shards:
            conn.execute(
                update(leases)
                .where(leases.c.shard.in_(shards), leases.c.owner == self.instance_id)
                .values(owner=None, expires_at=None)
            )

    def forget_dead_instances(self, older_than: timedelta = timedelta(hours=1)) -> int:
        """Delete instance rows whose heartbeat stopped long ago (crashed relays)."""
        cutoff = self._clock() - older_than
        with self.engine.begin() as conn:
            result = conn.execute(delete(instances).where(instances.c.heartbeat_at < cutoff))
        return result.rowcount

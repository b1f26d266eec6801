"""The leader lease: one row per schedule; only its holder fires.

The holder renews it every ttl/3. A standby takes it once it has expired (the leader died or
hung), so it moves within one TTL. Each take-over increments the epoch, and a firing commits
only while the row still names this instance with the same epoch (`fence`): a leader that
paused past its lease cannot fire after its successor started.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Connection, Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from outbox.scheduler_state import leader_state
from outbox.schema import scheduler_leader_table as leader
from outbox.types import utcnow
from scheduler.errors import LostLeadership

__all__ = ["LeaderLease", "LostLeadership", "new_owner_id"]

log = structlog.get_logger(__name__)


def new_owner_id() -> str:
    """Unique per process start: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaderLease:
    def __init__(
        self,
        engine: Engine,
        *,
        owner: str | None = None,
        name: str = "default",
        ttl_s: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("the lease TTL must be positive")
        self.engine = engine
        self.owner = owner or new_owner_id()
        self.name = name
        self.ttl = timedelta(seconds=ttl_s)
        self._clock = clock
        self.epoch: int | None = None
        self._row_ready = False

    @property
    def interval_s(self) -> float:
        """How often to renew: three tries before the lease can lapse."""
        return self.ttl.total_seconds() / 3

    @property
    def held(self) -> bool:
        return self.epoch is not None

    def tick(self) -> bool:
        """Renew the lease, or take it if it is free or expired. True while this instance leads."""
        now = self._clock()
        expires = now + self.ttl
        self._ensure_row()
        with self.engine.begin() as conn:
            mine = (leader.c.name == self.name) & (leader.c.owner == self.owner)
            renewed = 0
            if self.epoch is not None:
                renewed = conn.execute(
                    update(leader)
                    .where(mine, leader.c.epoch == self.epoch, leader.c.expires_at > now)
                    .values(expires_at=expires)
                ).rowcount
            if not renewed:
                taken = conn.execute(
                    update(leader)
                    .where(
                        leader.c.name == self.name,
                        or_(leader.c.owner.is_(None), leader.c.expires_at <= now),
                    )
                    .values(
                        owner=self.owner,
                        epoch=leader.c.epoch + 1,
                        expires_at=expires,
                        acquired_at=now,
                    )
                ).rowcount
                epoch = conn.execute(select(leader.c.epoch).where(mine)).scalar() if taken else None
                if self.epoch is not None:
                    log.warning("scheduler_leadership_lost", owner=self.owner, epoch=self.epoch)
                self.epoch = int(epoch) if epoch is not None else None
                if self.epoch is not None:
                    log.info("scheduler_leadership_taken", owner=self.owner, epoch=self.epoch)
        return self.epoch is not None

    def fence(self, conn: Connection, now: datetime) -> None:
        """In a firing's transaction: hold the lease row until commit, or raise LostLeadership.

        The row lock also makes a concurrent take-over wait for this firing to commit.
        """
        if self.epoch is None:
            raise LostLeadership(f"{self.owner} does not hold the scheduler lease")
        still = conn.execute(
            update(leader)
            .where(
                leader.c.name == self.name,
                leader.c.owner == self.owner,
                leader.c.epoch == self.epoch,
                leader.c.expires_at > now,
            )
            .values(owner=self.owner)
        ).rowcount
        if not still:
            raise LostLeadership(
                f"{self.owner} lost the scheduler lease (epoch {self.epoch}) before firing"
            )

    def release(self) -> None:
        """Give the lease up (on a clean stop), so a standby takes over on its next tick."""
        if self.epoch is None:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(leader)
                .where(
                    leader.c.name == self.name,
                    leader.c.owner == self.owner,
                    leader.c.epoch == self.epoch,
                )
                .values(owner=None, expires_at=None)
            )
        log.info("scheduler_leadership_released", owner=self.owner, epoch=self.epoch)
        self.epoch = None

    def _ensure_row(self) -> None:
        if self._row_ready:
            return
        with self.engine.connect() as conn:
            self._row_ready = leader_state(conn, self.name) is not None
        if self._row_ready:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(leader).values(name=self.name, owner=None, epoch=0))
        except IntegrityError:
            pass  # another instance created it at the same moment
        self._row_ready = True

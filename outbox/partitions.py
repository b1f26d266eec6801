"""PostgreSQL: the outbox is partitioned by id range, so retention gives space back.

Deleted rows leave their space in the heap and their entries in every index; VACUUM makes
the space reusable but never gives it back, and can remove nothing while a transaction
elsewhere holds the xmin horizon: one 200 s hold grew the heap 6.7 -> 47 MB and the indexes
2.2 -> 13.2 MB for good (ADR 013). A partition whose rows are all past retention is emptied
with TRUNCATE instead, which needs no VACUUM and frees its files at once, hold or not.

- `outbox_p<lower>`: ids [lower, lower + width). Migration 0015 attached the table as it
  was as `outbox_p0` (MINVALUE up to its next id) and created the first partitions.
- `outbox_default`: catches ids above every partition, so that a write never fails when no
  relay made partitions ahead for a long while (prune deletes its rows row by row).
- `ensure_ahead`: keeps `AHEAD` partitions above the highest id handed out; the relay calls
  it every few seconds (`relay.claiming`), prune too.
- `retire`: TRUNCATE every partition wholly below the ids in use whose rows prune may all
  delete, then DETACH and DROP it. Every statement runs with a short lock_timeout and is
  tried again on the next call when it would wait: a partition's TRUNCATE waits only for
  the claims reading it, DETACH for every user of the outbox (at most LOCK_TIMEOUT).

SQLite (no MVCC bloat: a delete frees its pages for reuse at once) and MySQL/MariaDB (InnoDB
purges delete-marked records in the background once no read view needs them) keep the plain
table; every function here does nothing there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    exists,
    func,
    not_,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, OperationalError

from outbox.locks import REPLAY_RANGE_LOCK, exclusive
from outbox.schema import outbox_table as o

__all__ = [
    "AHEAD",
    "DEFAULT_WIDTH",
    "Partition",
    "ensure_ahead",
    "is_partition_name",
    "is_partitioned",
    "partitions",
    "retire",
]

DEFAULT_WIDTH = 1_000_000
AHEAD = 2
LOCK_TIMEOUT = "100ms"
_NAME = re.compile(r"^outbox_(p\d+|default)$")
_BOUND = re.compile(r"FROM \((MINVALUE|'?(-?\d+)'?)\) TO \('?(-?\d+)'?\)")

_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('outbox_partitions'))"
_PARTITIONS = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'outbox'::regclass
"""


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    lower: int | None  # None: MINVALUE
    upper: int


def is_partition_name(name: str) -> bool:
    """A table that is one of the outbox's partitions (not in the metadata on purpose)."""
    return _NAME.match(name) is not None


def is_partitioned(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass('outbox')")
    ).scalar()
    return kind == "p"


def partitions(conn: Connection) -> list[Partition]:
    """The range partitions, lowest first (the default partition is not one)."""
    found = []
    for name, bound in conn.execute(text(_PARTITIONS)):
        m = _BOUND.search(bound or "")
        if m is None:
            continue
        lower = None if m.group(1) == "MINVALUE" else int(m.group(2))
        found.append(Partition(name, lower, int(m.group(3))))
    return sorted(found, key=lambda p: p.upper)


def _last_id(conn: Connection) -> int:
    """The highest id handed out (sequence values are taken before commit)."""
    value = conn.execute(
        text("SELECT last_value FROM pg_sequences WHERE sequencename = 'outbox_id_seq'")
    ).scalar()
    return int(value or 0)


def create_partition(conn: Connection, lower: int, upper: int) -> str:
    """An empty partition for ids [lower, upper): created apart, then attached (which takes
    only SHARE UPDATE EXCLUSIVE on the outbox, so writers and claims go on)."""
    name = f"outbox_p{lower}"
    conn.execute(
        text(f"CREATE TABLE {name} (LIKE outbox INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    )
    conn.execute(
        text(f"ALTER TABLE outbox ATTACH PARTITION {name} FOR VALUES FROM ({lower}) TO ({upper})")
    )
    return name


def ensure_ahead(engine: Engine, *, ahead: int = AHEAD, width: int | None = None) -> list[str]:
    """Create partitions until `ahead` of them lie above the highest id handed out, under
    an advisory lock (two relays never create the same one). Returns the new partitions'
    names ([] when another process or a lock holds it up: the next call tries again)."""
    if engine.dialect.name != "postgresql":
        return []
    created: list[str] = []
    try:
        with engine.begin() as conn:
            if not is_partitioned(conn) or not conn.execute(text(_TRY_LOCK)).scalar():
                return []
            parts = partitions(conn)
            if not parts:
                return []
            top = parts[-1]
            size = width or (top.upper - top.lower if top.lower is not None else DEFAULT_WIDTH)
            goal = _last_id(conn) + ahead * size
            upper = top.upper
            # Rows the default partition caught stay there: new ranges start above them.
            caught = conn.execute(text("SELECT max(id) FROM outbox_default")).scalar()
            if caught is not None and caught >= upper:
                upper = int(caught) + 1
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            while upper < goal:
                created.append(create_partition(conn, upper, upper + size))
                upper += size
    except OperationalError:
        return []  # lock_timeout: something holds the outbox; the next call goes on
    return created


def retire(
    engine: Engine,
    deletable: Callable[[Connection], Sequence[ColumnElement[bool]]],
    *,
    dry_run: bool = False,
) -> list[tuple[Partition, dict[str, int]]]:
    """Empty and drop every partition wholly below the ids in use whose rows prune's own
    conditions (`deletable(conn)`: published or dead, past retention, no open replay) all
    allow to go. Returns the partitions emptied (with `dry_run`: those that would be), each
    with the rows it held by status."""
    done: list[tuple[Partition, dict[str, int]]] = []
    with engine.connect() as conn:
        if not is_partitioned(conn):
            return done
        parts = partitions(conn)
        last = _last_id(conn)
        conn.rollback()
    for part in parts[:-1]:  # the newest partition always stays: ids are handed out there
        if part.upper > last:
            break
        try:
            # Under the lock a replay registers its range with, as prune's batches are.
            with exclusive(engine, REPLAY_RANGE_LOCK) as conn:
                emptied = _empty(conn, part, deletable(conn), dry_run=dry_run)
        except DBAPIError:
            # lock_timeout (a writer or a claim holds it), or another prune dropped it.
            continue
        if emptied is None:
            continue
        done.append((part, emptied))
        if not dry_run:
            _drop(engine, part)
    return done


def _empty(
    conn: Connection, part: Partition, deletable: Sequence[ColumnElement[bool]], *, dry_run: bool
) -> dict[str, int] | None:
    """TRUNCATE `part` if every row in it may go; its rows by status, or None if it stays.
    The check runs under the partition's ACCESS EXCLUSIVE lock: no insert of a late id, no
    requeue can slip in between."""
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    if not dry_run:
        conn.execute(text(f"LOCK TABLE {part.name} IN ACCESS EXCLUSIVE MODE"))
    in_range = [o.c.id < part.upper] + ([o.c.id >= part.lower] if part.lower is not None else [])
    keep = conn.execute(select(exists().where(*in_range, not_(and_(*deletable))))).scalar()
    if keep:
        return None
    counts = conn.execute(select(o.c.status, func.count()).where(*in_range).group_by(o.c.status))
    held = {str(status): int(n) for status, n in counts}
    if not dry_run:
        conn.execute(text(f"TRUNCATE {part.name}"))
    return held


def _drop(engine: Engine, part: Partition) -> None:
    """DETACH and DROP an emptied partition. DETACH takes ACCESS EXCLUSIVE on the outbox:
    writers wait at most LOCK_TIMEOUT, once per partition; on a timeout the empty partition
    stays (its files are already freed) and the next prune drops it."""
    try:
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            conn.execute(text(f"ALTER TABLE outbox DETACH PARTITION {part.name}"))
            conn.execute(text(f"DROP TABLE {part.name}"))
    except DBAPIError:
        pass  # lock_timeout, or another prune dropped it

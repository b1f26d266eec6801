"""Personal data: how long raw payment webhooks are kept, and erasing one person's address.

Retention (`prune_webhook_bodies`, run by `outbox prune`): a `payment_webhooks` row keeps its
ids, kind, order, tenant, times and outcome for good (the record of what was received and
what became of it), but its raw body (e-mail addresses, names, card digits) and its headers
(signatures) are emptied once it is older than PAYMENT_WEBHOOK_RETENTION_S. Nothing reads
them after acceptance: the processing job verifies the notice against the event accepted
with the row (payload digest), never against the body, so a pruned row still processes.

Erasure (`erase_address`, run by `outbox privacy erase`): every text column of every table
of the domain and of the outbox is searched for the address (case-insensitively) and each
occurrence is replaced by a pseudonym `erased-<reference>@erased.example`, unique to this
erasure and unrelated to the address; a `payment_webhooks` row that quotes it loses its raw
body and headers as above. The phone numbers of the person's orders (`orders.customer_phone`
of the orders placed with the address, and any given with `--phone`) are replaced the same
way, everywhere, by `erased-<reference>` (not a number: no SMS can go to it). The event
store is append-only but not immutable to this: the address and numbers inside stored
payloads are replaced too, so a projection rebuild gives the pseudonyms.
What remains: the person's orders, appointments, deliveries and money movements, under the
pseudonym (the business and the ledger must still add up).

Both work in short transactions of at most `batch_size` rows each; writers wait for one
batch at most. The erasure's search is a scan of each table (a LIKE on every text column):
it is rare and run by an operator, so no index serves it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    String,
    Table,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.types import TypeDecorator

from domain.schema import metadata as domain_metadata
from domain.schema import orders, payment_webhooks
from outbox.schema import metadata as outbox_metadata

__all__ = [
    "Erasure",
    "erase_address",
    "erased_address",
    "erased_phone",
    "new_reference",
    "prune_webhook_bodies",
    "webhook_bodies_to_prune",
]

# What an emptied body and headers hold (the columns are NOT NULL).
PRUNED = ""


def prune_webhook_bodies(engine: Engine, cutoff: datetime, *, batch_size: int = 1000) -> int:
    """Empty the raw body and headers of every webhook received before `cutoff`, `batch_size`
    rows per transaction, in primary-key order (one pass over the table); how many."""
    w = payment_webhooks
    total = 0
    after = ""
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(w.c.id)
                    .where(w.c.id > after, w.c.received_at < cutoff, _not_pruned())
                    .order_by(w.c.id)
                    .limit(batch_size)
                ).scalars()
            )
            if not ids:
                return total
            done = conn.execute(
                update(w)
                .where(w.c.id.in_(ids), w.c.received_at < cutoff)
                .values(body=PRUNED, headers=PRUNED)
            )
            total += int(done.rowcount)
        after = ids[-1]


def webhook_bodies_to_prune(conn: Connection, cutoff: datetime) -> int:
    """How many webhooks received before `cutoff` still hold a body or headers."""
    w = payment_webhooks
    query = select(func.count()).where(w.c.received_at < cutoff, _not_pruned())
    return int(conn.execute(query).scalar_one())


def _not_pruned() -> ColumnElement[bool]:
    w = payment_webhooks
    return or_(w.c.body != PRUNED, w.c.headers != PRUNED)


def new_reference() -> str:
    """The id an erasure is known by (audit log, pseudonym): random, never the address."""
    return secrets.token_hex(8)


def erased_address(reference: str) -> str:
    """The pseudonym that replaces an erased address: a valid address (the domain's commands
    and a projection rebuild accept it) on a reserved domain nobody can receive mail at."""
    return f"erased-{reference}@erased.example"


def erased_phone(reference: str) -> str:
    """The pseudonym that replaces an erased phone number: no number at all, so the
    notifications job sends no SMS to it (domain.phones.is_e164)."""
    return f"erased-{reference}"


@dataclass(slots=True)
class Erasure:
    reference: str
    # Rows changed, per table.
    tables: dict[str, int] = field(default_factory=dict)
    batches: int = 0

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def _text_columns(table: Table) -> list[Column[Any]]:
    found = []
    for column in table.columns:
        kind = column.type
        if isinstance(kind, TypeDecorator):
            kind = kind.impl_instance
        if isinstance(kind, String):
            found.append(column)
    return found


def searched_tables() -> list[Table]:
    """Every table of the domain and of the outbox, in a stable order."""
    tables = [*domain_metadata.sorted_tables, *outbox_metadata.sorted_tables]
    return [t for t in tables if _text_columns(t)]


def erase_address(
    engine: Engine,
    address: str,
    reference: str,
    *,
    batch_size: int = 500,
    phones: Sequence[str] = (),
) -> Erasure:
    """Replace `address` everywhere, and the phone numbers of its orders and `phones` (E.164)
    (see the module docstring); one transaction per batch."""
    result = Erasure(reference)
    needle = address.strip().lower()
    if "@" not in needle:
        raise ValueError("an e-mail address has an @")
    # Read before the address is replaced in `orders`: afterwards nothing names them.
    numbers = sorted({*phones, *_phones_of(engine, needle)})
    searches: list[Search] = [
        (needle, re.compile(re.escape(needle), re.IGNORECASE), erased_address(reference))
    ]
    # A number inside a longer one ("+4915112345678" in "+41234...678...") is not it.
    searches += [
        (n, re.compile(re.escape(n) + r"(?!\d)"), erased_phone(reference)) for n in numbers
    ]
    for table in searched_tables():
        changed = _erase_in(engine, table, searches, batch_size, result)
        if changed:
            result.tables[table.name] = changed
    return result


def _phones_of(engine: Engine, address: str) -> list[str]:
    """The phone numbers given with the orders placed with this address."""
    o = orders
    with engine.connect() as conn:
        found = conn.execute(
            select(o.c.customer_phone)
            .where(func.lower(o.c.customer_email) == address, o.c.customer_phone.is_not(None))
            .distinct()
        ).scalars()
        return [str(p) for p in found if p]


# What one erasure looks for: (the text, as the database's LIKE finds it; the pattern that
# finds it in Python; its pseudonym).
Search = tuple[str, re.Pattern[str], str]


def _erase_in(
    engine: Engine, table: Table, searches: list[Search], batch_size: int, result: Erasure
) -> int:
    columns = _text_columns(table)
    keys = list(table.primary_key.columns)
    matches = or_(
        *(
            func.lower(c).contains(needle, autoescape=True)
            for c in columns
            for needle, _, _ in searches
        )
    )
    raw = table is payment_webhooks
    total = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(select(*keys, *columns).where(matches).limit(batch_size)).all()
            changed = 0
            for row in rows:
                m = row._mapping
                values = {}
                for c in columns:
                    text = m[c.name]
                    if isinstance(text, str):
                        erased = _replaced(text, searches)
                        if erased != text:
                            values[c.name] = erased
                if not values:
                    # The database's LIKE matched what Python does not (an accent its
                    # collation folds, a longer number): not this address or number.
                    continue
                if raw:
                    values.update(body=PRUNED, headers=PRUNED)
                where = and_(*(k == m[k.name] for k in keys))
                conn.execute(update(table).where(where).values(values))
                changed += 1
        if not changed:
            return total
        total += changed
        result.batches += 1


def _replaced(text: str, searches: list[Search]) -> str:
    for _, pattern, pseudonym in searches:
        text = pattern.sub(pseudonym, text)
    return text

"""The transactional outbox: table, envelope and the writer used inside a unit of work.

Never imports `domain`: it moves opaque, typed envelopes.
"""

from outbox.envelope import Envelope, canonical_json, shard_for
from outbox.schema import OutboxStatus, metadata, outbox_table
from outbox.writer import append, outbox_rows

__all__ = [
    "Envelope",
    "OutboxStatus",
    "append",
    "canonical_json",
    "metadata",
    "outbox_rows",
    "outbox_table",
    "shard_for",
]

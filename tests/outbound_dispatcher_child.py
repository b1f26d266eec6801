"""Child process for the webhook crash test: a dispatcher that runs until it is killed.

Usage: python -m tests.outbound_dispatcher_child DATABASE_URL OWNER LEASE_S
Sends with the test sender (tests/outbound_receiver.py) and a fixed test signature.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import replace

from infra.db import make_engine
from outbound.claims import Claimed
from outbound.dispatcher import Dispatcher
from outbound.ports import SigningKey
from tests.outbound_helpers import CONFIG
from tests.outbound_receiver import HttpxSender


def _keys(claimed: Claimed) -> list[SigningKey]:
    return [SigningKey("v1", b"k" * 32)]


def _sign(keys: list[SigningKey], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp)}


def main() -> None:
    url, owner, lease_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    # Timeouts that make a lease of 6 s or more long enough for runs (outbound.claims); the
    # sender below has its own, so a gated request hangs until the test kills this process.
    config = replace(
        CONFIG,
        lease_s=lease_s,
        poll_interval_s=0.05,
        concurrency=8,
        connect_timeout_s=0.5,
        total_timeout_s=1.5,
    )
    sender = HttpxSender(timeout_s=60)
    Dispatcher(make_engine(url), sender, _keys, _sign, config, owner, shards=4).run(
        threading.Event()
    )


if __name__ == "__main__":
    main()

"""An aiosmtpd server in a process of its own, for bench/campaign.py.

Usage::

    .venv/bin/python bench/smtp_sink.py PORT

The same handler the tests use (tests.campaign_harness.Inbox, accepting every recipient),
on 127.0.0.1:PORT. It prints ``ready`` once it listens; on SIGTERM it stops and prints how
many e-mails each recipient received, as one JSON object (recipient -> count).

A real SMTP server never shares its sender's interpreter: in one process the server's
asyncio thread and the senders take turns at one GIL, and the figure measures that.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.campaign_harness import SmtpServer  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit() or not 0 < int(argv[0]) < 65536:
        print("usage: smtp_sink.py PORT (1-65535)", file=sys.stderr)
        return 2
    server = SmtpServer()
    server.port = int(argv[0])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print("ready", flush=True)
    stop.wait()
    server.stop()
    print(json.dumps(dict(server.inbox.counts())), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""`outbox webhooks deliver` with another idle poll interval, for bench/webhooks_out.py's
``--poll-interval`` what-if only: WebhookConfig.poll_interval_s (0.2 s) has no WEBHOOK_*
setting, and it bounds how long a new delivery waits for an idle dispatcher.

    python bench/webhooks_out_deliver.py 0.01     # the settings from the environment

The same wiring as the command (pipeline.cli.webhook_deliver.build_dispatcher, the
settings, the secret box); only the config's poll interval differs. SIGTERM lets the sends
in flight finish.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.db import make_engine
from infra.logs import configure_logging
from pipeline.cli.webhook_deliver import build_dispatcher
from pipeline.settings import load_settings
from pipeline.settings_webhooks import secret_box, webhook_config


def main(argv: list[str]) -> int:
    poll_interval_s = float(argv[0])
    loaded = load_settings()
    configure_logging(loaded.log_level, loaded.log_format)
    config = dataclasses.replace(webhook_config(loaded), poll_interval_s=poll_interval_s)
    engine = make_engine(loaded.database_url)
    dispatcher, sender = build_dispatcher(
        engine, config, secret_box(loaded), shards=loaded.outbox_shards
    )
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        dispatcher.run(stop)
    finally:
        sender.close()
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

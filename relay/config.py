"""The relay's settings (`RelayConfig`), read by relay.loop and its helpers."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RelayConfig"]


@dataclass(frozen=True, slots=True)
class RelayConfig:
    shards: int
    # Topics that must exist before the relay starts (the routed ones).
    topics: tuple[str, ...] = ()
    # Their partition counts as routing declares them: another count refuses the start.
    partitions: dict[str, int] | None = None
    batch_size: int = 1000
    lease_ttl_s: float = 10.0
    poll_min_s: float = 0.005
    poll_max_s: float = 1.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # Waits for an unanswering broker are capped lower than database back-offs: a broker
    # that returns is used within seconds, also after a long outage.
    broker_backoff_max_s: float = 2.0
    # How long a stopping relay waits for the batch in flight before leaving it pending.
    shutdown_grace_s: float = 30.0
    # A batch without all its outcomes this long replaces the producer (relay.sending).
    send_timeout_s: float = 45.0
    # Holding shards without progress this long, with other relays alive: step back
    # (relay.progress; RELAY_STALL_S).
    stall_s: float = 60.0
    ce_source: str = "/outbox-pipeline"
    # Backlog gauges (a GROUP BY over the outbox) are refreshed this often; None when no
    # one reads the metrics.
    stats_interval_s: float | None = 15.0

    def backoff(self, failures: int, cap: float | None = None) -> float:
        """Exponential, capped, with full jitter so that relays do not retry in step."""
        # The exponent stops growing long before the cap is reached: a key failing for hours
        # counts thousands of failures, and 2 ** 1024 is no float.
        ceiling = min(
            self.backoff_max_s if cap is None else cap,
            self.backoff_base_s * 2 ** min(max(0, failures - 1), 60),
        )
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - not crypto

    def broker_backoff(self, failures: int) -> float:
        return self.backoff(failures, min(self.backoff_max_s, self.broker_backoff_max_s))

"""A consumer worker killed (SIGKILL) right after its first batch's database commit, before
it commits the Kafka offsets. argv: database URL, bootstrap servers, group, topic."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from consumers import GROUPS, jobs
from consumers.dispatch import Dispatcher
from consumers.groups import BoundGroup
from consumers.runtime import Worker, WorkerConfig
from domain import CommandBus
from infra.db import make_engine

url, bootstrap, group, topic = sys.argv[1:5]
os.environ["OUTBOX_TEST_GROUP"], os.environ["OUTBOX_TEST_TOPIC"] = group, topic
import tests.consumer_jobs  # noqa: E402, F401 - declares the group's job

engine = make_engine(url)


def die(self: Worker, consumer: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


Worker._commit = die  # type: ignore[method-assign]
worker = Worker(
    engine,
    BoundGroup(GROUPS[group], jobs),
    WorkerConfig(
        bootstrap_servers=bootstrap,
        shards=8,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=6000,
        kafka_client=os.environ.get("KAFKA_CLIENT", "kafka-python"),  # as the harness's
    ),
    bus=CommandBus(engine, shards=8),
    dispatcher=Dispatcher(list(GROUPS.values()), jobs, shards=8),
)
worker.run()
sys.exit(3)  # not reached: the first batch's offset commit kills the process

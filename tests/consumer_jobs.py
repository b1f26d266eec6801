"""Jobs for tests that run workers in other processes (`outbox consume`, crash children).

Loaded through CONSUMER_MODULES=tests.consumer_jobs; the group and topic come from the
environment so that each test has its own.
"""

from __future__ import annotations

import os
import time

from sqlalchemy import text

from consumers import Group, JobContext, add_group, job
from domain.events import registry
from tests.consumer_harness import Pinged, bump

GROUP = os.environ["OUTBOX_TEST_GROUP"]
TOPIC = os.environ["OUTBOX_TEST_TOPIC"]
JOB = f"{GROUP}-work"

if Pinged.TYPE not in registry.names():
    registry.register(Pinged)


@job(JOB, on=Pinged, tries=2, backoff=(0.2,), timeout_s=1)
def work(event: Pinged, ctx: JobContext) -> None:
    """Counts each ping; a ping noted "hang" hangs on its first attempt, one noted
    "sleep-in-db" sleeps inside PostgreSQL on every attempt."""
    if event.note == "hang" and ctx.attempt == 1:
        time.sleep(30)
    if event.note == "sleep-in-db":
        ctx.connection.execute(text("SELECT pg_sleep(60)"))
    bump(ctx.connection, GROUP, event.n)


add_group(Group(GROUP, topics=(TOPIC,), jobs=(JOB,)))

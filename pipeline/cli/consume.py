"""`outbox consume`: run a consumer group's jobs (a supervised worker process)."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click

from consumers._internal.liveness import EXIT_REPLACE  # a worker to be replaced exits with it
from consumers.metrics import ConsumerMetrics
from infra.heap import settle
from outbox.rollups import RollupFlusher, Rollups
from pipeline.cli.clikit import EXIT_USAGE, CliExit, engine_for, err, guarded, settings
from pipeline.cli.supervisor import supervise
from pipeline.wiring import build_worker, load_job_modules

__all__ = ["EXIT_REPLACE", "consume"]


def _group(name: str) -> None:
    from consumers import GROUPS

    if name not in GROUPS:
        known = ", ".join(sorted(GROUPS))
        raise CliExit(EXIT_USAGE, f"no consumer group named {name!r}; known groups: {known}")


@click.command("consume")
@click.option("--group", "group_name", required=True, help="The consumer group to run.")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    help="Worker processes to supervise (restarted when they die or a job times out).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (worker N on port+N).",
)
@click.option("--worker", is_flag=True, hidden=True, help="Be one worker (the supervisor's child).")
@click.option(
    "--slot",
    type=click.IntRange(0, 63),
    default=None,
    hidden=True,
    help="The supervisor's slot of this worker (its static group membership).",
)
@guarded
def consume(
    group_name: str, processes: int, metrics_port: int | None, worker: bool, slot: int | None
) -> None:
    """Run a consumer group's jobs: idempotent, retried, failed jobs recorded.

    SIGTERM/SIGINT finish the message in flight, commit its offset and leave the group.
    """
    loaded = settings()
    load_job_modules(loaded, group=group_name)
    _group(group_name)
    if not worker:

        def command(index: int) -> list[str]:
            cmd = [sys.executable, "-m", "pipeline.cli", "consume", "--group", group_name]
            if metrics_port:
                cmd += ["--metrics-port", str(metrics_port + index)]
            # A replaced worker keeps its slot: the same group.instance.id (ADR 019).
            return [*cmd, "--worker", "--slot", str(index)]

        supervise(f"consume {group_name}", command, processes)
        return
    engine = engine_for(loaded)
    rollups = Rollups()  # the dashboard's charts, written once a minute and at exit
    runner = build_worker(
        loaded,
        engine,
        group_name,
        metrics=ConsumerMetrics(rollups=rollups),
        serve_metrics=bool(metrics_port),
        worker_process=True,
        slot=slot,
    )
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="0.0.0.0", registry=runner.metrics.registry)  # noqa: S104

    def _stop(signum: int, _frame: FrameType | None) -> None:
        err.print(f"consume {group_name}: {signal.Signals(signum).name}: finishing the message")
        runner.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settle()  # full collections skip start-up's objects (infra.heap)
    with RollupFlusher(rollups, engine):
        stats = runner.run()
    if stats.exit_reason in ("replace", "stalled"):
        why = "a job timed out" if stats.exit_reason == "replace" else "the worker stalled"
        raise CliExit(EXIT_REPLACE, f"consume {group_name}: {why}; exiting to be replaced")

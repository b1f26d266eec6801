"""`outbox relay`: publish the outbox to Kafka, one process or a supervised few."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click

from pipeline.cli.clikit import (
    FiniteFloat,
    dump_json,
    engine_for,
    err,
    guarded,
    json_option,
    out,
    settings,
)
from pipeline.cli.supervisor import supervise

__all__ = ["relay"]


@click.command("relay")
@click.option("--once", is_flag=True, help="Publish what is due now, then exit (cron, tests).")
@click.option(
    "--max-wait",
    type=FiniteFloat(1, 3600),
    default=30.0,
    show_default=True,
    help="With --once: seconds to wait for an unreachable broker before exiting 5.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (with --processes: port, port+1, ...).",
)
@click.option("--batch-size", type=click.IntRange(1, 5000), default=None, help="Rows per batch.")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Run N relay processes (e.g. one per core); the shard leases split the work.",
)
@json_option
@guarded
def relay(  # noqa: PLR0917 - click passes each option positionally
    once: bool,
    max_wait: float,
    metrics_port: int | None,
    batch_size: int | None,
    processes: int,
    as_json: bool,
) -> None:
    """Publish outbox rows to Kafka, in order per key, until SIGTERM/SIGINT.

    Several relays (processes or machines) may run: each holds leases on a fair share of
    the shards. SIGTERM finishes the batch in flight, releases the leases and exits 0;
    during a broker outage it waits RELAY_SHUTDOWN_GRACE_S for that batch, leaves it
    pending (the next holder sends it) and exits 0 too. With --once, a broker that stays
    unreachable for --max-wait seconds exits 5.
    """
    if processes > 1:
        if once:
            raise click.UsageError("--once runs one process; drop --processes")
        _supervise(processes, metrics_port, batch_size)
        return
    from infra.db import use_generic_plans
    from infra.heap import settle
    from outbox.rollups import RollupFlusher, Rollups
    from pipeline.wiring import build_relay, load_job_modules, routed_topics
    from relay import ensure_topics
    from relay.metrics import RelayMetrics

    loaded = settings()
    load_job_modules(loaded)  # their groups' topics are routed topics too
    engine = use_generic_plans(engine_for(loaded))  # its claim, planned once (infra.db)
    if loaded.relay_create_topics:
        ensure_topics(
            loaded.kafka_bootstrap_servers,
            routed_topics(),
            replication_factor=loaded.kafka_replication_factor,
        )
    rollups = Rollups()  # the dashboard's charts, written once a minute and at exit
    runner = build_relay(
        loaded,
        engine,
        batch_size=batch_size,
        metrics=RelayMetrics(rollups=rollups),
        serve_metrics=bool(metrics_port),
    )
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="0.0.0.0", registry=runner.metrics.registry)  # noqa: S104

    def _stop(signum: int, _frame: FrameType | None) -> None:
        err.print(f"relay: {signal.Signals(signum).name}: finishing the batch in flight")
        runner.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settle()  # full collections skip start-up's objects (infra.heap)
    with RollupFlusher(rollups, engine):
        stats = runner.run(once=once, max_wait_s=max_wait if once else None)
    if once:
        summary = {
            "published": stats.published,
            "dead": stats.dead,
            "deferred": stats.deferred,
            "batches": stats.batches,
        }
        if as_json:
            dump_json(summary)
        else:
            out.print(
                f"published [bold]{stats.published}[/bold], dead {stats.dead}, "
                f"deferred {stats.deferred} in {stats.batches} batches"
            )


def _supervise(processes: int, metrics_port: int | None, batch_size: int | None) -> None:
    def command(index: int) -> list[str]:
        cmd = [sys.executable, "-m", "pipeline.cli", "relay"]
        if metrics_port:
            cmd += ["--metrics-port", str(metrics_port + index)]
        if batch_size:
            cmd += ["--batch-size", str(batch_size)]
        return cmd

    supervise("relay", command, processes)

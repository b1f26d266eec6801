"""`outbox relay`, `outbox topics ensure` and `outbox broker`."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from types import FrameType

import click
from rich.table import Table

from pipeline.clikit import EXIT_FAILED, CliExit, engine_for, err, guarded, out, settings
from pipeline.supervisor import supervise

__all__ = ["broker", "relay", "topics"]


@click.command("relay")
@click.option("--once", is_flag=True, help="Publish what is due now, then exit (cron, tests).")
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
@click.option("--json", "as_json", is_flag=True, help="With --once: print the summary as JSON.")
@guarded
def relay(
    once: bool, metrics_port: int | None, batch_size: int | None, processes: int, as_json: bool
) -> None:
    """Publish outbox rows to Kafka, in order per key, until SIGTERM/SIGINT.

    Several relays (processes or machines) may run: each holds leases on a fair share of
    the shards. SIGTERM finishes the batch in flight, releases the leases and exits 0.
    """
    if processes > 1:
        if once:
            raise click.UsageError("--once runs one process; drop --processes")
        _supervise(processes, metrics_port, batch_size)
        return
    from pipeline.wiring import build_relay, routed_topics
    from relay import ensure_topics

    loaded = settings()
    engine = engine_for(loaded)
    if loaded.relay_create_topics:
        ensure_topics(
            loaded.kafka_bootstrap_servers,
            routed_topics(),
            replication_factor=loaded.kafka_replication_factor,
        )
    runner = build_relay(loaded, engine, batch_size=batch_size, serve_metrics=bool(metrics_port))
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="0.0.0.0", registry=runner.metrics.registry)  # noqa: S104

    def _stop(signum: int, _frame: FrameType | None) -> None:
        err.print(f"relay: {signal.Signals(signum).name}: finishing the batch in flight")
        runner.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stats = runner.run(once=once)
    if once:
        summary = {
            "published": stats.published,
            "dead": stats.dead,
            "deferred": stats.deferred,
            "batches": stats.batches,
        }
        if as_json:
            click.echo(json.dumps(summary))
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


@click.group("topics")
def topics() -> None:
    """Kafka topics the domain routes events to."""


@topics.command("ensure")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@guarded
def topics_ensure(as_json: bool) -> None:
    """Create the routed topics that are missing, with their partition counts."""
    from pipeline.wiring import routed_topics
    from relay import ensure_topics

    loaded = settings()
    reports = ensure_topics(
        loaded.kafka_bootstrap_servers,
        routed_topics(),
        replication_factor=loaded.kafka_replication_factor,
    )
    mismatched = [r for r in reports if r.mismatch]
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "topic": r.topic,
                        "partitions": r.partitions,
                        "wanted_partitions": r.wanted_partitions,
                        "created": r.created,
                    }
                    for r in reports
                ]
            )
        )
    else:
        table = Table("topic", "partitions", "action")
        for r in reports:
            action = "created" if r.created else "exists"
            if r.mismatch:
                action = f"[red]exists with {r.partitions}, routing wants {r.wanted_partitions}"
            table.add_row(r.topic, str(r.partitions), action)
        out.print(table)
    if mismatched:
        raise CliExit(
            EXIT_FAILED,
            "partition counts differ from domain/routing.py: "
            + ", ".join(r.topic for r in mismatched)
            + "; a changed count re-maps keys, so fix it deliberately (recreate or migrate)",
        )


@click.command("broker")
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True)
@click.option("--create-topics/--no-create-topics", default=True, show_default=True)
def broker(port: int, create_topics: bool) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, memory only) until Ctrl-C."""
    from pipeline.broker import BrokerError, EmbeddedBroker
    from pipeline.wiring import routed_topics
    from relay import ensure_topics

    try:
        embedded = EmbeddedBroker(port).start()
    except BrokerError as exc:
        raise CliExit(EXIT_FAILED, str(exc)) from exc
    try:
        if create_topics:
            ensure_topics(embedded.bootstrap_servers, routed_topics())
        out.print(
            f"embedded broker on [bold]{embedded.bootstrap_servers}[/bold] (memory only); "
            f"export KAFKA_BOOTSTRAP_SERVERS={embedded.bootstrap_servers}; Ctrl-C stops it"
        )
        process = embedded.process
        assert process is not None  # noqa: S101
        # Only signal the child here: waiting inside the handler would deadlock with the
        # wait() below, which holds the Popen's waitpid lock.
        signal.signal(signal.SIGTERM, lambda *_: process.terminate())
        with contextlib.suppress(KeyboardInterrupt):
            process.wait()
    finally:
        embedded.stop()

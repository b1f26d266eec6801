"""`outbox broker`: the embedded Kafka-compatible broker for development."""

from __future__ import annotations

import contextlib
import signal

import click

from pipeline.cli.clikit import EXIT_FAILED, CliExit, guarded, out

__all__ = ["broker"]


@click.command("broker")
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True)
@click.option("--create-topics/--no-create-topics", default=True, show_default=True)
@guarded
def broker(port: int, create_topics: bool) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, memory only) until Ctrl-C.

    It says it is up only once the broker itself answers Kafka requests on the port; a
    port another process holds is refused (exit 1)."""
    from infra.broker import BrokerError, EmbeddedBroker
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

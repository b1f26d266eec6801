"""`outbox topics ensure`: the routed topics, with their partition counts."""

from __future__ import annotations

import click
from rich.table import Table

from pipeline.cli.clikit import EXIT_FAILED, CliExit, dump_json, guarded, json_option, out, settings

__all__ = ["topics"]


@click.group("topics")
def topics() -> None:
    """Kafka topics the domain routes events to."""


@topics.command("ensure")
@json_option
@guarded
def topics_ensure(as_json: bool) -> None:
    """Create the routed topics that are missing, with their partition counts.

    Routed: the domain's topics and every consumer group's .jobs/.retry/.dlq, those of
    the CONSUMER_MODULES included. An existing topic is never changed."""
    from pipeline.wiring import load_job_modules, routed_topics
    from relay import ensure_topics

    loaded = settings()
    load_job_modules(loaded)  # CONSUMER_MODULES: their routes and groups' topics too
    reports = ensure_topics(
        loaded.kafka_bootstrap_servers,
        routed_topics(),
        replication_factor=loaded.kafka_replication_factor,
    )
    mismatched = [r for r in reports if r.mismatch]
    if as_json:
        dump_json(
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
            "partition counts differ from routing (domain/routing.py, CONSUMER_MODULES): "
            + ", ".join(r.topic for r in mismatched)
            + "; a changed count re-maps keys, so fix it deliberately (recreate or migrate)",
        )

"""Alembic environment: runs on the connection handed in by infra.migrate, or on the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import domain.schema
import outbox.schema

config = context.config
target_metadata = [domain.schema.metadata, outbox.schema.metadata]


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run()

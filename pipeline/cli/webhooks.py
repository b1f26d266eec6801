"""`outbox webhooks ...`: outbound webhooks (ADR 021).

One click group; each part registers its commands below from its own module:
endpoints (pipeline/cli/webhook_endpoints.py), the dispatcher (webhook_deliver.py), the
attempt log, resend and recover (webhook_ops.py).
"""

from __future__ import annotations

import click

from pipeline.cli.webhook_deliver import deliver
from pipeline.cli.webhook_endpoints import endpoints
from pipeline.cli.webhook_ops import attempts, recover, resend

__all__ = ["webhooks"]


@click.group()
def webhooks() -> None:
    """Signed webhooks to the tenants' endpoints: endpoints, delivery, attempts, resend."""


# Registrations (one line per module; keep them in this block):
webhooks.add_command(endpoints)
webhooks.add_command(deliver)
webhooks.add_command(attempts)
webhooks.add_command(resend)
webhooks.add_command(recover)

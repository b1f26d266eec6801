"""Applications built on outbox-pipeline from outside it (see examples/README.md).

Nothing in the project imports this package: `outbox` loads an example only through
CONSUMER_MODULES, as it would load a team's own application.
"""

__all__: list[str] = []

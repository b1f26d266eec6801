"""The relay process: publishes outbox rows to Kafka in order per key (issue: the relay).

Not built yet; this package exists so the layout and import rules hold from day one.
"""

__all__: list[str] = []

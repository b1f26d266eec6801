"""Periodic dispatch through the outbox with APScheduler (issue: scheduler). Not built yet."""

__all__: list[str] = []

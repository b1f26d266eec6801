"""Alembic migrations for every table (domain and outbox)."""

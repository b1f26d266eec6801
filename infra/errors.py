"""Errors of the infrastructure helpers. Each message says what to do next.

InfraError
├── SettingsError   a configuration value is missing or malformed (exit 3, names it)
├── BrokerError     the embedded broker could not be found, started or reached
└── MigrationError  (infra.migrate) Alembic refused the upgrade; nothing was changed
"""

from __future__ import annotations

__all__ = ["BrokerError", "InfraError", "SettingsError"]


class InfraError(Exception):
    """Base of the infrastructure helpers' errors."""


class SettingsError(InfraError):
    """A configuration value is missing or malformed; the message names the variable."""


class BrokerError(InfraError):
    """The embedded broker could not be found or started; the message says why."""

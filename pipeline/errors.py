"""Errors of the composition root. Each message says what to do next.

PipelineError
├── SettingsError   a configuration value is missing or malformed (exit 3, names it)
├── BrokerError     the embedded broker could not be found, started or reached
└── CliExit         a command stops with a named exit code and one line for the operator
"""

from __future__ import annotations

__all__ = ["BrokerError", "CliExit", "PipelineError", "SettingsError"]


class PipelineError(Exception):
    """Base of the composition root's errors."""


class SettingsError(PipelineError):
    """A configuration value is missing or malformed; the message names the variable."""


class BrokerError(PipelineError):
    """The embedded broker could not be found or started; the message says why."""


class CliExit(PipelineError):
    """Stop with a named exit code and one clear line for the operator."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

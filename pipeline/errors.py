"""Errors of the composition root. Each message says what to do next.

PipelineError
└── CliExit         a command stops with a named exit code and one line for the operator

The infrastructure's errors (`infra.errors`: `SettingsError`, `BrokerError`) are
re-exported here, as the composition root raises and reports them too.
"""

from __future__ import annotations

from infra.errors import BrokerError, SettingsError

__all__ = ["BrokerError", "CliExit", "PipelineError", "SettingsError"]


class PipelineError(Exception):
    """Base of the composition root's errors."""


class CliExit(PipelineError):
    """Stop with a named exit code and one clear line for the operator."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

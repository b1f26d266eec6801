"""Composition root: settings, wiring, migrations runner and the `outbox` CLI.

The only package that knows every other one; nothing imports it.
"""

__all__: list[str] = []

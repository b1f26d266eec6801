"""Composition root: settings, wiring, the `outbox` CLI (`pipeline.cli`) and the demo
(`pipeline.demo`). Infrastructure that others import (engines, migrations, the embedded
broker) is in `infra`.

The only package that knows every other one; nothing imports it.
"""

__all__: list[str] = []

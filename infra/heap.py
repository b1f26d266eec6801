"""The garbage collector of a long-running process (`outbox serve`, relay, consumers, the
webhook dispatcher).

CPython's full collection (generation 2) walks every tracked object in the process, and
nothing else runs meanwhile: no request answered, no record sent. A web worker holds ~100k
objects once its modules are imported (SQLAlchemy, pydantic, Starlette, the domain), and
every full collection walked them all again for nothing: measured in `outbox serve` at
300 webhooks/s on a 2-vCPU machine, full collections of 150-160k objects paused it for
93-136 ms, each one a burst of requests answered 100+ ms late (docs/performance.md, issue
26 item 4).

`settle()`, called once start-up is done, collects what start-up left behind and then
moves every object still alive into the permanent generation (`gc.freeze`, Python 3.7+):
later collections skip them, so a full collection walks only what the process made since.
The frozen objects are the process's modules, classes and configuration, alive until it
exits anyway. The collector stays on for everything made afterwards (reference cycles in
requests, records and results are still freed).

    from infra.heap import settle
    app = build_web_app(settings, engine)
    settle()
"""

from __future__ import annotations

import gc

__all__ = ["settle"]


def settle() -> int:
    """Collect once, then exempt every surviving object from later collections; returns how
    many objects are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()

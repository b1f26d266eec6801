"""Run N copies of a worker command; restart any that exits; pass SIGTERM/SIGINT on.

Used by `outbox relay --processes N` and `outbox consume --processes N`. A consumer worker
whose job ran past its timeout exits on purpose (its process may hold a wedged resource);
this is what starts a fresh one.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from types import FrameType

from pipeline.clikit import EXIT_FAILED, CliExit, err

__all__ = ["restart_delay", "supervise"]

# A child that exits within this many seconds of its start counts as crash-looping.
QUICK_EXIT_S = 10.0


def restart_delay(quick_exits: int) -> float:
    """0.5 s after a child that ran a while (a timed-out job's worker, say); doubling up to
    30 s while children keep dying at once (a database or broker down, a bad deploy), so a
    crash loop neither spins nor floods the log."""
    return min(30.0, 0.5 * 2 ** max(0, quick_exits - 1)) if quick_exits else 0.5


def supervise(name: str, command: Callable[[int], list[str]], processes: int) -> None:
    children = {i: subprocess.Popen(command(i)) for i in range(processes)}  # noqa: S603
    started = dict.fromkeys(children, time.monotonic())
    quick_exits = dict.fromkeys(children, 0)
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stopping:
        time.sleep(0.2)
        for index, child in list(children.items()):
            code = child.poll()
            if code is not None and not stopping:
                ran = time.monotonic() - started[index]
                quick_exits[index] = quick_exits[index] + 1 if ran < QUICK_EXIT_S else 0
                delay = restart_delay(quick_exits[index])
                err.print(
                    f"{name}: process {child.pid} exited with {code} after {ran:.1f} s; "
                    f"starting another in {delay:g} s",
                    soft_wrap=True,  # one line per event in the log, whatever its width
                )
                deadline = time.monotonic() + delay
                while not stopping and time.monotonic() < deadline:
                    time.sleep(0.1)
                if stopping:
                    break
                children[index] = subprocess.Popen(command(index))  # noqa: S603
                started[index] = time.monotonic()
    codes = [child.wait() for child in children.values()]
    if any(codes):
        raise CliExit(EXIT_FAILED, f"{name} processes exited with {codes}")

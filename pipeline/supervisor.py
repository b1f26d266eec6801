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

__all__ = ["supervise"]


def supervise(name: str, command: Callable[[int], list[str]], processes: int) -> None:
    children = {i: subprocess.Popen(command(i)) for i in range(processes)}  # noqa: S603
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
                err.print(f"{name}: process {child.pid} exited with {code}; starting another")
                time.sleep(0.5)
                children[index] = subprocess.Popen(command(index))  # noqa: S603
    codes = [child.wait() for child in children.values()]
    if any(codes):
        raise CliExit(EXIT_FAILED, f"{name} processes exited with {codes}")

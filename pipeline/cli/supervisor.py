"""Run N copies of a worker command; restart any that exits; stop them all on SIGTERM/SIGINT.

Used by `outbox relay --processes N` and `outbox consume --processes N`. A consumer worker
whose job ran past its timeout, or that found itself stalled, exits on purpose (75); this is
what starts a fresh one.

Children die with their supervisor. Killed with kill -9, a supervisor once left its worker
running unsupervised, and the restarted supervisor added another member to the group (3
members for 2 processes). So each child asks the kernel for SIGTERM when its parent dies
(PR_SET_PDEATHSIG, Linux) and checks that the parent did not die before it asked; SIGTERM
makes a worker finish its message, commit and leave its group. Children run in a process
group of their own, so a Ctrl-C in the terminal reaches only the supervisor, which stops
them with SIGTERM; a second Ctrl-C says it is still stopping, and children that have not
stopped after `STOP_GRACE_S` are killed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable
from types import FrameType

from pipeline.cli.clikit import EXIT_FAILED, CliExit, err

__all__ = ["restart_delay", "supervise"]

# A child that exits within this many seconds of its start counts as crash-looping.
QUICK_EXIT_S = 10.0
# How long children may take to stop (a relay's batch, a consumer's message) before SIGKILL.
STOP_GRACE_S = 60.0
_PR_SET_PDEATHSIG = 1


def restart_delay(quick_exits: int) -> float:
    """0.5 s after a child that ran a while (a timed-out job's worker, say); doubling up to
    30 s while children keep dying at once (a database or broker down, a bad deploy), so a
    crash loop neither spins nor floods the log."""
    return min(30.0, 0.5 * 2 ** max(0, quick_exits - 1)) if quick_exits else 0.5


def _die_with(parent: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: SIGTERM when the parent dies."""

    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: the parent's stop is all there is
            return
        if os.getppid() != parent:  # the parent died before the request: stop now
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        argv,
        preexec_fn=_die_with(os.getpid()),  # noqa: PLW1509 - the supervisor has one thread
        process_group=0,
    )


def supervise(name: str, command: Callable[[int], list[str]], processes: int) -> None:
    children = {i: _spawn(command(i)) for i in range(processes)}
    started = dict.fromkeys(children, time.monotonic())
    quick_exits = dict.fromkeys(children, 0)
    stop_signals = 0

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_signals
        stop_signals += 1
        if stop_signals > 1:
            running = sum(child.poll() is None for child in children.values())
            err.print(
                f"{name}: still stopping: {running} process(es) finishing their work "
                f"(killed after {STOP_GRACE_S:g} s)",
                soft_wrap=True,
            )
            return
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop_signals:
        time.sleep(0.2)
        for index, child in list(children.items()):
            code = child.poll()
            if code is None or stop_signals:
                continue
            ran = time.monotonic() - started[index]
            quick_exits[index] = quick_exits[index] + 1 if ran < QUICK_EXIT_S else 0
            delay = restart_delay(quick_exits[index])
            err.print(
                f"{name}: process {child.pid} exited with {code} after {ran:.1f} s; "
                f"starting another in {delay:g} s",
                soft_wrap=True,  # one line per event in the log, whatever its width
            )
            deadline = time.monotonic() + delay
            while not stop_signals and time.monotonic() < deadline:
                time.sleep(0.1)
            if stop_signals:
                break
            children[index] = _spawn(command(index))
            started[index] = time.monotonic()
    codes = _wait_all(name, list(children.values()))
    if any(codes):
        raise CliExit(EXIT_FAILED, f"{name} processes exited with {codes}")


def _wait_all(name: str, children: list[subprocess.Popen[bytes]]) -> list[int]:
    """Wait (bounded) for every child to stop; kill those that do not."""
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(c.poll() is None for c in children):
        time.sleep(0.1)
    for child in children:
        if child.poll() is None:
            err.print(f"{name}: process {child.pid} did not stop in time: killed")
            child.kill()
    return [child.wait() for child in children]

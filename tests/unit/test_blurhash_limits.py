"""Hostile images are refused at once (DoNotRetry) and large ones decode in bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from consumers.errors import DoNotRetry
from jobs.blurhash import _resolve, compute_blurhash

RSS_LIMIT_MB = 150
# VmHWM (the peak of this process's own address space) rather than ru_maxrss, which Linux
# carries over from the parent through fork and exec.
_MEASURE = """
import sys
from pathlib import Path
from consumers.errors import DoNotRetry
from jobs.blurhash import compute_blurhash
try:
    outcome = compute_blurhash(Path(sys.argv[1]))
except DoNotRetry as exc:
    outcome = f"refused: {exc}"
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(int(hwm) // 1024)
print(outcome)
"""


def _peak_rss_mb(path: Path) -> tuple[int, str]:
    """Peak RSS of a fresh process that imports the job and hashes `path` (MB), and what
    came of it."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    peak, outcome = done.stdout.splitlines()[:2]
    return int(peak), outcome


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="measures RSS through /proc")
def test_a_12000_square_png_is_refused_without_decoding_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    Image.new("1", (12_000, 12_000)).save(path)  # a small file of 144 M pixels
    assert path.stat().st_size < 100_000
    peak, outcome = _peak_rss_mb(path)
    assert outcome.startswith("refused:") and "pixels" in outcome
    assert peak < RSS_LIMIT_MB


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="measures RSS through /proc")
def test_a_large_accepted_image_is_hashed_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "large.png"
    Image.new("RGB", (4_000, 4_000), (200, 40, 90)).save(path)  # the largest RGB accepted
    peak, outcome = _peak_rss_mb(path)
    assert len(outcome) == 28  # a 4x3 BlurHash
    assert peak < RSS_LIMIT_MB


def test_a_decompression_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(path)
    with pytest.raises(DoNotRetry, match="too many pixels"):
        compute_blurhash(path)


def test_a_fifo_is_refused_at_once_instead_of_blocking(tmp_path: Path) -> None:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            compute_blurhash(path)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # unblock the reader so the test run can end
        with open(path, "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert isinstance(outcome[0], DoNotRetry) and "not a regular file" in str(outcome[0])


@pytest.mark.parametrize("image_path", ["a\x00b.png", "../outside.png", "/etc/passwd"])
def test_a_path_with_nul_or_outside_the_storage_is_refused(tmp_path: Path, image_path: str) -> None:
    with pytest.raises(DoNotRetry):
        _resolve(tmp_path, image_path)

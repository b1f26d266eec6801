"""generate-product-blurhash: a placeholder hash of each uploaded product image.

Hostile files are refused at once (DoNotRetry), never retried: a path with NUL or outside
STORAGE_DIR, anything but a regular file (a FIFO would block the worker until its time
limit), a file over MAX_FILE_BYTES, an image over MAX_PIXELS (decompression bombs
included: Pillow's own bomb check is caught too), or one whose decoded pixels would take
more than MAX_DECODE_BYTES. Accepted images are decoded small: JPEG at 1/2..1/8 scale
(`draft`), then `reduce` by an integer factor in the image's own mode, and only that small
image is converted to RGB, so memory stays near the decoded size of the file itself.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import blurhash
from PIL import Image, UnidentifiedImageError

from consumers import DoNotRetry, job
from domain.products import ProductImageUploaded, SetProductBlurhash
from jobs.config import Context

__all__ = [
    "MAX_DECODE_BYTES",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "compute_blurhash",
    "generate_product_blurhash",
]

# 4x3 components is what BlurHash recommends for a card-sized placeholder; the image is
# shrunk first because the hash only keeps low frequencies (and a 24 MP photo takes seconds).
COMPONENTS = (4, 3)
THUMBNAIL = (64, 64)
# A product photo is at most a few tens of megapixels; 100 M is a bomb or a mistake.
MAX_PIXELS = 100_000_000
# What the decoded image may take in memory (after JPEG's draft scaling): 16 Mpx of RGB or
# RGBA (Pillow keeps 4 bytes a pixel), 64 Mpx of grayscale; with the worker's own ~70 MB
# that keeps a job under 150 MB of RSS.
MAX_DECODE_BYTES = 64 * 1024 * 1024
MAX_FILE_BYTES = 50 * 1024 * 1024
_WIDE_MODES = {"I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def _decoded_bytes(image: Image.Image) -> int:
    """Pillow's own buffer: 1 byte a pixel for 1/L/P, 2 for I;16, else 4 (RGB is RGBX)."""
    width, height = image.size
    per_pixel = _WIDE_MODES.get(image.mode) or (1 if len(image.getbands()) == 1 else 4)
    return width * height * per_pixel


def _open_regular(path: Path) -> int:
    """A descriptor of the file, refused unless it is a regular file of a sane size. Opened
    non-blocking and checked on the descriptor itself, so a FIFO swapped in never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DoNotRetry(f"{path.name} cannot be opened: {exc.strerror or exc}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise DoNotRetry(f"{path.name} is not a regular file (a FIFO, device or directory)")
    if info.st_size > MAX_FILE_BYTES:
        os.close(fd)
        raise DoNotRetry(f"{path.name} is {info.st_size} bytes; at most {MAX_FILE_BYTES}")
    os.set_blocking(fd, True)
    return fd


def _small_rgb(image: Image.Image, name: str) -> Image.Image:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise DoNotRetry(f"{name} is {width}x{height} pixels; at most {MAX_PIXELS} are read")
    image.draft("RGB", THUMBNAIL)  # JPEG: decode at 1/2..1/8 scale; others: no-op
    if _decoded_bytes(image) > MAX_DECODE_BYTES:
        raise DoNotRetry(
            f"{name} ({width}x{height} {image.mode}) would take "
            f"{_decoded_bytes(image) // 2**20} MiB to decode; at most {MAX_DECODE_BYTES // 2**20}"
        )
    factor = max(1, min(image.size[0] // THUMBNAIL[0], image.size[1] // THUMBNAIL[1]))
    small = image.reduce(factor) if factor > 1 else image
    rgb = small.convert("RGB")
    rgb.thumbnail(THUMBNAIL)
    return rgb


def compute_blurhash(path: Path) -> str:
    fd = _open_regular(path)
    try:
        with os.fdopen(fd, "rb") as fh, warnings.catch_warnings():
            # Over Pillow's MAX_IMAGE_PIXELS it warns, over twice that it raises: both refuse.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as image:
                small = _small_rgb(image, path.name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DoNotRetry(f"{path.name} has too many pixels (a decompression bomb?): {exc}") from exc
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError, EOFError) as exc:
        raise DoNotRetry(f"{path.name} is not a readable image: {exc}") from exc
    return str(blurhash.encode(small, x_components=COMPONENTS[0], y_components=COMPONENTS[1]))


def _resolve(storage_dir: Path, image_path: str) -> Path:
    if "\x00" in image_path:
        raise DoNotRetry(f"image path {image_path[:80]!r} contains a NUL character")
    root = storage_dir.resolve()
    path = (root / image_path).resolve()
    if not path.is_relative_to(root):
        raise DoNotRetry(f"image path {image_path[:80]!r} points outside the storage directory")
    return path


@job(
    "generate-product-blurhash",
    group="media",
    on=ProductImageUploaded,
    tries=3,
    backoff=(10, 60),
    timeout_s=60,
)
def generate_product_blurhash(event: ProductImageUploaded, ctx: Context) -> None:
    """A missing file is retried (the upload may still be syncing); a corrupt, hostile or
    oversized one fails now."""
    path = _resolve(ctx.config.storage_dir, event.image_path)
    if not path.exists():
        raise FileNotFoundError(f"image {event.image_path!r} is not in the storage directory")
    ctx.run(
        SetProductBlurhash(
            product_id=ctx.key, blurhash=compute_blurhash(path), image_path=event.image_path
        )
    )

"""generate-product-blurhash: a placeholder hash of each uploaded product image."""

from __future__ import annotations

from pathlib import Path

import blurhash
from PIL import Image, UnidentifiedImageError

from consumers.context import JobContext
from consumers.errors import DoNotRetry
from consumers.job import job
from domain.catalog import ProductImageUploaded, SetProductBlurhash

__all__ = ["compute_blurhash", "generate_product_blurhash"]

# 4x3 components is what BlurHash recommends for a card-sized placeholder; the image is
# shrunk first because the hash only keeps low frequencies (and a 24 MP photo takes seconds).
COMPONENTS = (4, 3)
THUMBNAIL = (64, 64)


def compute_blurhash(path: Path) -> str:
    try:
        with Image.open(path) as image:
            image.draft("RGB", THUMBNAIL)  # JPEG: decode at reduced size
            small = image.convert("RGB")
            small.thumbnail(THUMBNAIL)
    except (UnidentifiedImageError, SyntaxError, ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DoNotRetry(f"{path.name} is not a readable image: {exc}") from exc
    return str(blurhash.encode(small, x_components=COMPONENTS[0], y_components=COMPONENTS[1]))


def _resolve(storage_dir: Path, image_path: str) -> Path:
    root = storage_dir.resolve()
    path = (root / image_path).resolve()
    if not path.is_relative_to(root):
        raise DoNotRetry(f"image path {image_path!r} points outside the storage directory")
    return path


@job(
    "generate-product-blurhash",
    group="media",
    on=ProductImageUploaded,
    tries=3,
    backoff=(10, 60),
    timeout_s=60,
)
def generate_product_blurhash(event: ProductImageUploaded, ctx: JobContext) -> None:
    """A missing file is retried (the upload may still be syncing); a corrupt one fails now."""
    path = _resolve(ctx.config.storage_dir, event.image_path)
    if not path.exists():
        raise FileNotFoundError(f"image {event.image_path!r} is not in the storage directory")
    ctx.run(
        SetProductBlurhash(
            product_id=ctx.key, blurhash=compute_blurhash(path), image_path=event.image_path
        )
    )

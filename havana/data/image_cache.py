"""A manifest split's images decoded once: one uint8 tensor [N, 3, H, W], resized as training and extraction resize.

Training with `train.loader: decoded` reads its images from this tensor and augments whole batches on the training
device (`havana.data.augment`) instead of decoding every JPEG in every epoch. Row i of the tensor is row i of the split
(manifest order), resized by `transforms.plain_transform` (the config's interpolation on the PIL image, then
PILToTensor), so it is the image `train_transform` starts from.

The file is written atomically with a provenance record beside it naming what it was decoded from (the manifest's
sha256, the split, the number of rows, the image size and the interpolation). A cache whose record is missing or names
anything else, or whose file is damaged or of another shape, is decoded again, never reused. It is a means, not a
product: the engine keeps it while the job runs, so that a resumed job does not decode again, and removes it with the
checkpoint once model.pt exists (Market-1501's 12,936 train images at 256×128 take 1.3 GB).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from havana.data.images import ManifestImages, ordered_batches
from havana.data.transforms import plain_transform
from havana.errors import HavanaError
from havana.utils import atomic, provenance, torch_io
from havana.utils.progress import Progress

DECODE_BATCH = 256  # images decoded per step (split over the threads)


def cache_settings(
    manifest_sha256: str, split: str, rows: int, image_size: tuple[int, int], interpolation: str
) -> dict[str, Any]:
    """What a cache was decoded from: its provenance record's config, compared whole before reuse."""
    return {
        "manifest_sha256": manifest_sha256,
        "split": split,
        "rows": rows,
        "image_size": list(image_size),
        "interpolation": interpolation,
    }


def decode_images(
    root: str | os.PathLike,
    rows: pd.DataFrame,
    image_size: tuple[int, int],
    interpolation: str,
    threads: int = 1,
    label: str = "decode images",
) -> torch.Tensor:
    """The rows' images (paths relative to `root`) decoded and resized: uint8 [N, 3, H, W] in row order, read on
    `threads` threads (PIL releases the GIL while it decodes and resizes)."""
    if rows.empty:
        raise HavanaError("there are no images to decode; check the manifest split.")
    data = ManifestImages(root, rows, plain_transform(image_size, interpolation))
    images = torch.empty((len(data), 3, *image_size), dtype=torch.uint8)
    shown = Progress(label, len(data), unit="image")
    done = 0
    for batch, *_ in ordered_batches(data, DECODE_BATCH, workers=0, threads=threads):
        images[done : done + len(batch)] = batch
        done += len(batch)
        shown.update(len(batch))
    shown.close()
    return images


def _record_matches(path: Path, settings: dict[str, Any]) -> bool:
    """Whether the provenance record beside `path` exists, is readable and names exactly `settings`."""
    try:
        record = yaml.safe_load(provenance.beside(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(record, dict) and record.get("config") == settings


def load_or_decode(
    path: str | os.PathLike,
    root: str | os.PathLike,
    rows: pd.DataFrame,
    settings: dict[str, Any],
    threads: int = 1,
) -> torch.Tensor:
    """The cache at `path` when its record names `settings` and it holds [rows, 3, H, W] uint8; else the rows'
    images decoded again (`decode_images`) and written to `path` with a new record."""
    path = Path(path)
    shape = (len(rows), 3, *settings["image_size"])
    if path.is_file() and _record_matches(path, settings):
        try:
            images = torch_io.load(path, what="image cache", advice="it is decoded again")
        except HavanaError:
            images = None
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and tuple(images.shape) == shape:
            return images
    images = decode_images(root, rows, settings["image_size"], settings["interpolation"], threads)
    remove_image_cache(path)  # the old record first: a crash below leaves no record, so no reuse
    with atomic.atomic_path(path) as tmp:
        torch_io.save(images, tmp)
    provenance.write_beside(path, settings)
    return images


def remove_image_cache(path: str | os.PathLike) -> None:
    """Delete a cache and its provenance record (either may be missing)."""
    path = Path(path)
    provenance.beside(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)

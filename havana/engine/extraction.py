"""Feature extraction: run a trained extractor over a manifest and stream the features into the HDF5 store.

Train images give V views (view 0 un-augmented, views 1.. with the train augmentation seeded per image, random erasing
switchable by `extraction.random_erasing` for Table 6); query and
gallery images give two: plain and horizontally flipped. Un-augmented images travel as uint8 and are normalised and
flipped per batch on the model's device. Batched under `torch.inference_mode`, bf16 autocast on CUDA.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from havana import __version__
from havana.data.datasets import read_manifest
from havana.data.features import SPLITS, FeatureSplit, FeatureWriter
from havana.data.images import ManifestImages, MultiViewImages, ordered_batches
from havana.data.transforms import normalize_batch, plain_transform, train_transform
from havana.models.extractor import load_extractor
from havana.models.extractor_config import ExtractionConfig, ExtractorConfig
from havana.utils import provenance
from havana.utils.device import select_device
from havana.utils.progress import progress

READ_AHEAD = 8  # batches of un-augmented images read at a time when the model runs on CPU


@dataclass
class ExtractionSummary:
    """What was written: rows per split, views of the train split, feature size."""

    path: Path
    rows: dict[str, int]
    views: int
    dim: int


def embed(model: torch.nn.Module, images: torch.Tensor, device: torch.device, fast: bool) -> torch.Tensor:
    """Test features [B, D] float32 of a batch [B, C, H, W] (moved to `device`; bf16 autocast when `fast`)."""
    images = images.to(device, non_blocking=True)
    if fast:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
        return model(images).float()


def embed_views(model: torch.nn.Module, views: torch.Tensor, device: torch.device, fast: bool) -> torch.Tensor:
    """Features [B, V, D] of a batch of views [B, V, C, H, W]."""
    batch, count = views.shape[:2]
    return embed(model, views.flatten(0, 1), device, fast).view(batch, count, -1)


def embed_with_flip(model: torch.nn.Module, images: torch.Tensor, device: torch.device, fast: bool) -> torch.Tensor:
    """Features [B, 2, D]: plain and horizontally flipped, in one forward pass."""
    return embed_views(model, torch.stack([images, images.flip(-1)], dim=1), device, fast)


def extract_features(
    manifest: str | os.PathLike,
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    extraction: ExtractionConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    extractor: str | None = None,
) -> ExtractionSummary:
    """Write `out` (HDF5, the schema of docs/design.md) with the features of every split in `manifest`.

    `extraction` defaults to the settings saved with the model, `overrides` replace some of its fields; `dataset` and
    `extractor` default to the manifest's
    folder name and the model's folder name.
    """
    manifest, model_path, out = Path(manifest), Path(model_path), Path(out)
    rows = read_manifest(manifest)
    model, config = load_extractor(model_path)
    extraction = dataclasses.replace(extraction or config.extraction, **(overrides or {}))
    device = select_device(extraction.device)
    fast = device.type == "cuda" and extraction.amp
    model = model.to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    attrs = {
        "dataset": dataset or manifest.parent.name,
        "extractor": extractor or model_path.parent.name,
        "checkpoint_sha256": provenance.file_sha256(model_path),
        "manifest_sha256": provenance.file_sha256(manifest),
        "config_hash": provenance.config_hash({"extractor": config, "extraction": extraction}),
        "image_size": list(config.image_size),
        "views": extraction.views,
        "created_by": f"havana {__version__}",
    }
    counts: dict[str, int] = {}
    with FeatureWriter(out, attrs) as writer, torch.inference_mode():
        for split in SPLITS:
            split_rows = rows[rows["split"] == split].reset_index(drop=True)
            views = extraction.views if split == "train" else 2
            writer.create_split(split, views, model.feature_dim)
            counts[split] = _extract_split(
                model, config, extraction, manifest.parent, split, split_rows, writer, device, fast
            )
    provenance.write_beside(out, {"extractor": config, "extraction": extraction, "attrs": attrs})
    return ExtractionSummary(path=out, rows=counts, views=extraction.views, dim=model.feature_dim)


def _extract_split(
    model,
    config: ExtractorConfig,
    extraction: ExtractionConfig,
    root: Path,
    split: str,
    rows,
    writer: FeatureWriter,
    device: torch.device,
    fast: bool,
) -> int:
    """Stream one split's features into `writer`; returns the number of images."""
    if rows.empty:
        return 0
    plain = plain_transform(config.image_size, config.transforms.interpolation)
    if split == "train":
        views = (
            config.transforms
            if extraction.random_erasing is None
            else dataclasses.replace(config.transforms, random_erasing=extraction.random_erasing)
        )
        data = MultiViewImages(
            root, rows, plain, train_transform(config.image_size, views), views=extraction.views, seed=extraction.seed
        )
        batch_size = max(1, extraction.batch_size // extraction.views)  # images per forward stays batch_size
    else:
        data = ManifestImages(root, rows, plain)
        batch_size = max(1, extraction.batch_size // 2)
    # On CPU the forward keeps every core busy, and a loader process taking a core stalls the model's threads (one
    # busy decoding process cuts resnet18's forward on 2 cores from 306 to 122 images/s), so images are read here,
    # between forwards, on as many threads as the model uses, several batches at a time: after each forward the
    # model's idle OpenMP threads spin for some milliseconds, holding cores the readers would use. Augmented views
    # seed torch's global RNG, so they are read on one thread.
    workers = extraction.num_workers if device.type == "cuda" else 0
    augmented = split == "train" and extraction.views > 1
    threads, read_ahead = (1, 1) if augmented else (torch.get_num_threads(), READ_AHEAD)
    batches = progress(
        ordered_batches(
            data, batch_size, workers=workers, threads=threads, read_ahead=read_ahead, pin_memory=device.type == "cuda"
        ),
        f"extract {split}",
        -(-len(data) // batch_size),
        unit="batch",
    )
    for batch in batches:
        if split == "train":
            images, augmented, pids, camids, indices = batch
            views = torch.cat([_normalized(images, config, device).unsqueeze(1), augmented.to(device)], dim=1)
            features = embed_views(model, views, device, fast)
        else:
            images, pids, camids, indices = batch
            features = embed_with_flip(model, _normalized(images, config, device), device, fast)
        writer.append(
            split,
            FeatureSplit(
                features=features.cpu().numpy(),
                pids=pids.numpy(),
                camids=camids.numpy(),
                paths=[data.paths[i] for i in indices.tolist()],
            ),
        )
    return len(data)


def _normalized(images: torch.Tensor, config: ExtractorConfig, device: torch.device) -> torch.Tensor:
    """A uint8 batch from the loader as the model's normalised float input, converted on `device`."""
    return normalize_batch(images.to(device, non_blocking=True), config.transforms)

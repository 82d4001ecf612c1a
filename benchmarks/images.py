"""Benchmark: training images/s of the two extractor input paths, `train.loader: pil` (a DataLoader decoding each JPEG
and running `train_transform` per image) against `decoded` (the split decoded once by havana.data.image_cache, then
whole P×K batches gathered and augmented by havana.data.augment), and the one-off cost of decoding the cache, measured
in one run on fabricated JPEGs of Market-1501's stored size (128×64) resized to the paper's 256×128.

Why: in extractor training the images, not the model, can set the pace (per image: a JPEG decode, a resize and five
tensor transforms every epoch); this shows what the decoded path saves per epoch and after how many epochs its
one-off decode pays back. Only the input is timed (no model): the data side of an epoch.

    .venv/bin/python benchmarks/images.py --images 2000 --threads 1 --device cpu

The JPEGs are smooth random patterns with mild noise, saved at quality 95, a few kB each as Market's crops are (pure
noise would decode slower than photographs do).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from havana.data.augment import augment_batch
from havana.data.image_cache import cache_settings, load_or_decode
from havana.data.images import ManifestImages
from havana.data.sampler import PKSampler
from havana.data.transforms import train_transform
from havana.models.extractor_config import TransformConfig
from havana.utils import provenance
from havana.utils.device import select_device


def fabricate(root: Path, images: int, stored: tuple[int, int], per_id: int) -> Path:
    """`images` JPEGs of `stored` (height, width), `per_id` per identity, all in the train split; returns the
    manifest."""
    rng = np.random.default_rng(0)
    rows = []
    (root / "train").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        coarse = Image.fromarray(rng.integers(0, 256, size=(stored[0] // 8, stored[1] // 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((stored[1], stored[0]), Image.BICUBIC), dtype=np.int16)
        pixels = np.clip(smooth + rng.normal(0, 6, size=smooth.shape), 0, 255).astype(np.uint8)
        path = f"train/{i:05d}.jpg"
        Image.fromarray(pixels).save(root / path, quality=95)
        rows.append({"path": path, "pid": i // per_id, "camid": i % 6, "split": "train"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def pil_epoch(manifest: Path, rows: pd.DataFrame, sampler: PKSampler, size: tuple[int, int]) -> tuple[float, int]:
    """One epoch of today's path: a DataLoader in this process (num_workers 0) over `train_transform`; seconds and
    images."""
    data = ManifestImages(manifest.parent, rows, train_transform(size, TransformConfig()), labels=None)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=0)
    seen, started = 0, time.perf_counter()
    for images, *_ in loader:
        seen += len(images)
    return time.perf_counter() - started, seen


def decoded_epoch(images: torch.Tensor, sampler: PKSampler, device: torch.device) -> tuple[float, int]:
    """One epoch of the decoded path: each P×K batch gathered from the cache (on `device`) and augmented there;
    seconds and images."""
    generator, config = torch.Generator(), TransformConfig()
    seen, started = 0, time.perf_counter()
    for step, indices in enumerate(sampler):
        generator.manual_seed(step)
        out = augment_batch(images[torch.as_tensor(indices, device=device)], config, generator)
        seen += len(out)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--stored", type=int, nargs=2, default=(128, 64), help="height width of the JPEGs")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 128), help="height width trained at")
    parser.add_argument("--per-id", type=int, default=16, help="images per identity (Market: about 17)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, and threads decoding the cache")
    parser.add_argument("--device", default="cpu", help="where the decoded path augments: cpu or cuda")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per path (the best is reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size, device = tuple(args.size), select_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        manifest = fabricate(Path(folder), args.images, tuple(args.stored), args.per_id)
        rows = pd.read_csv(manifest)
        jpeg_kb = np.mean([(manifest.parent / p).stat().st_size for p in rows["path"]]) / 1024
        sampler = PKSampler(rows["pid"].tolist(), p=16, k=4, seed=0)

        cache = Path(folder) / "train_images.pt"
        settings = cache_settings(provenance.file_sha256(manifest), "train", len(rows), size, "bilinear")
        started = time.perf_counter()
        images = load_or_decode(cache, manifest.parent, rows, settings, threads=args.threads)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        load_or_decode(cache, manifest.parent, rows, settings, threads=args.threads)  # reuse: read back from disk
        reload_s = time.perf_counter() - started
        images = images.to(device)

        pil = min((pil_epoch(manifest, rows, sampler, size) for _ in range(args.epochs)), key=lambda r: r[0])
        decoded = min((decoded_epoch(images, sampler, device) for _ in range(args.epochs)), key=lambda r: r[0])

    pil_rate, decoded_rate = pil[1] / pil[0], decoded[1] / decoded[0]
    print(
        f"{args.images} JPEGs of {args.stored[0]}x{args.stored[1]} ({jpeg_kb:.1f} kB mean) -> {size[0]}x{size[1]}, "
        f"P x K 16 x 4, {args.threads} thread(s), torch {torch.__version__}, {provenance.cpu_model()}"
    )
    print(f"pil (DataLoader, num_workers 0, train_transform): {pil_rate:8.0f} images/s")
    print(f"decoded (cache + augment_batch on {device}):      {decoded_rate:8.0f} images/s")
    print(f"ratio decoded / pil: {decoded_rate / pil_rate:.1f}x")
    cache_mb = images.nbytes / 2**20
    print(
        f"cache: decode + write {build_s:.2f} s ({len(rows) / build_s:.0f} images/s, {cache_mb:.0f} MiB), "
        f"read back {reload_s:.2f} s"
    )
    saved = pil[0] / pil[1] - decoded[0] / decoded[1]  # seconds saved per image per epoch
    print(f"the decode pays back after {build_s / (saved * len(rows)):.2f} epochs")


if __name__ == "__main__":
    main()

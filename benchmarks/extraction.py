"""Benchmark: extraction images/s end to end vs the model's forward-only images/s (goal ratio >= 0.9), and training
images/s, measured in one run on a fabricated image folder (random-weight extractor; no downloads).

    .venv/bin/python benchmarks/extraction.py --arch resnet18 --size 128 64 --images 512 --device cpu

Images/s counts forward images: every train view and both the plain and flipped copy of a query/gallery image.
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

from havana.engine.extraction import embed, extract_features
from havana.engine.train_extractor import train_extractor
from havana.models.extractor import build_extractor, save_extractor
from havana.models.extractor_config import ExtractionConfig, ExtractorConfig, ExtractorTrainConfig
from havana.utils.device import select_device


def fabricate(root: Path, images: int, size: tuple[int, int], ids: int) -> Path:
    """Random JPEGs at roughly Market-1501's source size (the loader resizes them), a quarter train, the rest
    gallery."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(images):
        split = "train" if i < images // 4 else "gallery"
        path = f"{split}/{i:05d}.jpg"
        (root / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)).save(root / path)
        rows.append({"path": path, "pid": i % ids, "camid": i % 6, "split": split})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def forward_images_per_s(
    model: torch.nn.Module, batch: int, size: tuple[int, int], device: torch.device, fast: bool, repeats: int
) -> float:
    """Forward-only throughput on a resident random batch (no data pipeline)."""
    images = torch.randn(batch, 3, *size)
    with torch.inference_mode():
        for _ in range(2):
            embed(model, images, device, fast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            embed(model, images, device, fast)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    size = tuple(args.size)
    device = select_device(args.device)
    fast = device.type == "cuda"
    config = ExtractorConfig(
        arch=args.arch,
        pretrained=False,
        image_size=size,
        train=ExtractorTrainConfig(epochs=1, num_workers=args.workers, device=str(device)),
        extraction=ExtractionConfig(views=1, batch_size=args.batch_size, num_workers=args.workers, device=str(device)),
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = fabricate(root / "data", args.images, (2 * size[0], 2 * size[1]), ids=max(16, args.images // 32))
        torch.manual_seed(0)
        model = build_extractor(config, num_classes=10).to(device).eval()
        if fast:
            model = model.to(memory_format=torch.channels_last)
        save_extractor(root / "model.pt", model, config, 10)

        started = time.perf_counter()
        summary = extract_features(manifest, root / "model.pt", root / "features.h5")
        forward_images = summary.rows["train"] * summary.views + 2 * (summary.rows["query"] + summary.rows["gallery"])
        end_to_end = forward_images / (time.perf_counter() - started)
        forward_only = forward_images_per_s(
            model, args.batch_size, size, device, fast, repeats=max(3, forward_images // args.batch_size)
        )
        training = train_extractor(manifest, config, root / "train", seed=0).last_metrics["images_per_s"]

    # extraction on CPU reads images in-process between forwards (havana/engine/extraction.py); training uses
    # the workers
    reading = f"{args.workers} workers" if fast else f"extraction reads in-process, training {args.workers} workers"
    name = torch.cuda.get_device_name(device) if fast else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"device {device} ({name}), "
        f"{args.arch} at {size[0]}x{size[1]}, batch {args.batch_size}, {reading}, "
        f"{forward_images} forward images"
    )
    print(f"extraction end to end : {end_to_end:9.1f} images/s")
    print(f"forward only          : {forward_only:9.1f} images/s")
    print(f"ratio                 : {end_to_end / forward_only:9.3f}   (goal >= 0.9)")
    print(f"training              : {training:9.1f} images/s")


if __name__ == "__main__":
    main()

"""Test helper: a tiny image folder with a manifest (train/query/gallery), images coloured by identity plus noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def make_image_folder(
    root: Path,
    *,
    train_ids: int = 6,
    per_id: int = 3,
    test_ids: int = 3,
    size: tuple[int, int] = (32, 16),
    seed: int = 0,
) -> Path:
    """Write JPEGs and `root/manifest.csv`; train ids 1..train_ids, test ids after them (1 query + 2 gallery each)."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(split: str, pid: int, camid: int, number: int) -> None:
        colour = np.array([(pid * 53) % 256, (pid * 97) % 256, (pid * 29) % 256])
        pixels = np.clip(colour + rng.normal(0, 40, size=(*size, 3)), 0, 255).astype(np.uint8)
        relative = f"{split}/{pid:04d}_c{camid}_{number:02d}.jpg"
        (root / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / relative, quality=90)
        rows.append({"path": relative, "pid": pid, "camid": camid, "split": split})

    for pid in range(1, train_ids + 1):
        for number in range(per_id):
            add("train", pid, number % 2, number)
    for pid in range(train_ids + 1, train_ids + test_ids + 1):
        add("query", pid, 0, 0)
        add("gallery", pid, 1, 1)
        add("gallery", pid, 2, 2)
    manifest = root / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "pid", "camid", "split"]).to_csv(manifest, index=False)
    return manifest

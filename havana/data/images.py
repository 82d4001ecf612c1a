"""Torch datasets over manifest rows: decoded RGB images with identity, camera and row index; seeded multi-view."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from havana.errors import HavanaError


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB, or raise HavanaError naming the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise HavanaError(f"image {path} listed in the manifest does not exist; rerun `havana prepare`.") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise HavanaError(f"image {path} cannot be decoded ({exc.__class__.__name__}); replace it or rerun "
                          "`havana prepare`.") from None


def label_map(pids: Sequence[int]) -> dict[int, int]:
    """Person ids mapped to contiguous class indices 0..C-1 in sorted order."""
    return {pid: label for label, pid in enumerate(sorted({int(p) for p in pids}))}


class ManifestImages(torch.utils.data.Dataset):
    """Rows of one manifest split; item i is (image tensor, class label, camid, i).

    The label is the pid's class index when `labels` is given (training), else the pid itself.
    """

    def __init__(self, root: str | os.PathLike, rows: pd.DataFrame, transform: Callable,
                 labels: dict[int, int] | None = None) -> None:
        self.root = Path(root)
        self.paths = rows["path"].astype(str).tolist()
        self.pids = rows["pid"].astype("int64").tolist()
        self.camids = rows["camid"].astype("int64").tolist()
        self.transform = transform
        self.labels = labels

    def __len__(self) -> int:
        return len(self.paths)

    def target(self, index: int) -> int:
        """The class label (training) or pid of row `index`."""
        pid = self.pids[index]
        return self.labels[pid] if self.labels is not None else pid

    def __getitem__(self, index: int):
        image = self.transform(load_rgb(self.root / self.paths[index]))
        return image, self.target(index), self.camids[index], index


class MultiViewImages(ManifestImages):
    """Item i is ([V,C,H,W] views, pid, camid, i): view 0 from `plain`, views 1.. from `augment`.

    Each augmented view draws from torch's RNG seeded by (seed, i, view), so the views do not depend on worker count,
    batch order or what ran before: extraction is reproducible.
    """

    def __init__(self, root: str | os.PathLike, rows: pd.DataFrame, plain: Callable, augment: Callable,
                 views: int, seed: int = 0) -> None:
        super().__init__(root, rows, plain)
        self.augment, self.views, self.seed = augment, views, seed

    def __getitem__(self, index: int):
        image = load_rgb(self.root / self.paths[index])
        stack = [self.transform(image)]
        for view in range(1, self.views):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + index) * 1_009 + view)
                stack.append(self.augment(image))
        return torch.stack(stack), self.target(index), self.camids[index], index

"""Torch datasets over manifest rows: decoded RGB images with identity, camera and row index; seeded multi-view;
batches in order from loader processes or from threads of this process, an unreadable image reported as one sentence
whichever process read it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
        raise HavanaError(
            f"image {path} cannot be decoded ({exc.__class__.__name__}); replace it or rerun `havana prepare`."
        ) from None


def label_map(pids: Sequence[int]) -> dict[int, int]:
    """Person ids mapped to contiguous class indices 0..C-1 in sorted order."""
    return {pid: label for label, pid in enumerate(sorted({int(p) for p in pids}))}


class ManifestImages(torch.utils.data.Dataset):
    """Rows of one manifest split; item i is (image tensor, class label, camid, i).

    The label is the pid's class index when `labels` is given (training), else the pid itself.
    """

    def __init__(
        self, root: str | os.PathLike, rows: pd.DataFrame, transform: Callable, labels: dict[int, int] | None = None
    ) -> None:
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
    """Item i is (plain view, [V-1,C,H,W] augmented views, pid, camid, i): `plain` gives view 0, `augment` views 1..

    Each augmented view draws from torch's RNG seeded by (seed, i, view), so the views do not depend on worker count,
    batch order or what ran before: extraction is reproducible.
    """

    def __init__(
        self, root: str | os.PathLike, rows: pd.DataFrame, plain: Callable, augment: Callable, views: int, seed: int = 0
    ) -> None:
        super().__init__(root, rows, plain)
        self.augment, self.views, self.seed = augment, views, seed

    def __getitem__(self, index: int):
        image = load_rgb(self.root / self.paths[index])
        plain = self.transform(image)
        augmented = []
        for view in range(1, self.views):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + index) * 1_009 + view)
                augmented.append(self.augment(image))
        stack = torch.stack(augmented) if augmented else torch.empty(0, *plain.shape)
        return plain, stack, self.target(index), self.camids[index], index


def loader_batches(loader: Iterable) -> Iterator:
    """Iterate a DataLoader; a HavanaError raised in a worker process arrives as its own sentence, without the
    worker traceback the DataLoader wraps it in."""
    try:
        yield from loader
    except HavanaError as exc:
        message = str(exc)
        if not message.startswith("Caught HavanaError in DataLoader worker"):
            raise
        # The wrapped text ends with the worker's formatted exception: "havana.errors.HavanaError: <message>".
        raise HavanaError(message.rpartition("HavanaError: ")[2].strip()) from None


def ordered_batches(
    data: torch.utils.data.Dataset,
    batch_size: int,
    *,
    workers: int,
    threads: int = 1,
    read_ahead: int = 1,
    pin_memory: bool = False,
) -> Iterator:
    """`data`'s items in order, collated `batch_size` at a time: read by `workers` DataLoader processes (pinned when
    `pin_memory`), or with `workers` 0 in this process, `read_ahead` batches at a time split over `threads` threads
    (PIL releases the GIL while it decodes and resizes)."""
    if workers > 0:
        yield from loader_batches(
            torch.utils.data.DataLoader(
                data, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory
            )
        )
        return

    def read(indices: range) -> list:
        return [data[i] for i in indices]

    threads, chunk = max(1, threads), batch_size * max(1, read_ahead)
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(data), chunk):
            indices = range(start, min(start + chunk, len(data)))
            step = -(-len(indices) // threads)  # contiguous parts, one per thread
            parts = pool.map(read, [indices[i : i + step] for i in range(0, len(indices), step)])
            fields = torch.utils.data.default_collate([item for part in parts for item in part])
            for offset in range(0, len(indices), batch_size):
                yield [field[offset : offset + batch_size] for field in fields]

"""HDF5 feature store: one file per (dataset, extractor), written once by `havana extract`, read by every later stage.

Schema (docs/design.md): groups train/query/gallery, each with `features` [N,V,D] float32 (query/gallery V=2: plain,
flipped), `pids` int64, `camids` int64, `paths` utf-8; root attributes describe where the features came from, and
`complete=1` is written last, just before the temporary file is renamed to its final name.

HDF5 must never meet a full disk: a failed write inside its caches is reported only when an object is freed, and the
close that follows crashes the process (exit 139). So the writer checks the free space before every batch, keeping
`SPACE_MARGIN_BYTES` plus a few chunks in reserve for the final flush, flushes after every batch (so an error surfaces
as an exception), and raises OSError(ENOSPC) naming the output before HDF5 could fail.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from havana.errors import HavanaError
from havana.utils.atomic import atomic_path

SPLITS = ("train", "query", "gallery")
_STR = h5py.string_dtype("utf-8")
SPACE_MARGIN_BYTES = 16 << 20  # free space kept back for HDF5's metadata and chunk caches when the file is closed
INDEX_CHUNK_ROWS = 4096  # rows per HDF5 chunk of pids, camids and paths


def feature_chunk_rows(views: int, dim: int) -> int:
    """Rows per HDF5 chunk of a split's features: about 1 MiB, at most 256 rows (the file grows in whole chunks)."""
    return max(1, min(256, (1 << 20) // (4 * views * dim)))


@dataclass
class FeatureSplit:
    """One split's features [N,V,D] float32 with its identities, cameras and image paths."""

    features: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.pids = np.asarray(self.pids, dtype=np.int64)
        self.camids = np.asarray(self.camids, dtype=np.int64)
        self.paths = [str(p) for p in self.paths]
        n = len(self.features)
        if self.features.ndim != 3 or len(self.pids) != n or len(self.camids) != n or len(self.paths) != n:
            raise ValueError(
                f"FeatureSplit needs features [N,V,D] and N pids, camids and paths; got features "
                f"{self.features.shape}, {len(self.pids)} pids, {len(self.camids)} camids, "
                f"{len(self.paths)} paths"
            )


@dataclass
class FeatureFile:
    """A complete feature file in memory: root attributes and the splits that were read."""

    attrs: dict[str, Any]
    splits: dict[str, FeatureSplit]

    def __getitem__(self, name: str) -> FeatureSplit:
        if name not in self.splits:
            raise HavanaError(f"feature split '{name}' was not read; known: {', '.join(self.splits)}.")
        return self.splits[name]


def _attr_value(value: Any) -> Any:
    """An attribute value h5py can store: numbers and strings as-is, sequences as arrays, the rest as JSON."""
    if isinstance(value, (bool, int, float, str, np.integer, np.floating)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return np.asarray(value)
    return json.dumps(value, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    """An attribute read back from h5py as a plain python value."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


class FeatureWriter:
    """Stream batches into a feature file; `close()` marks it complete and renames it, `abort()` leaves nothing.

    Use as a context manager: leaving the block normally closes, leaving it with an exception aborts.
    """

    def __init__(self, path: str | os.PathLike, attrs: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        self._h5 = h5py.File(self._tmp, "w")
        for key, value in attrs.items():
            if key == "complete":
                raise ValueError("'complete' is written by FeatureWriter.close(), not passed in attrs")
            self._h5.attrs[key] = _attr_value(value)
        self.rows = {split: 0 for split in SPLITS}

    def _group(self, split: str, views: int, dim: int) -> h5py.Group:
        if split in self._h5:
            return self._h5[split]
        group = self._h5.create_group(split)
        group.create_dataset(
            "features",
            shape=(0, views, dim),
            maxshape=(None, views, dim),
            dtype=np.float32,
            chunks=(feature_chunk_rows(views, dim), views, dim),
        )
        group.create_dataset("pids", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(INDEX_CHUNK_ROWS,))
        group.create_dataset("camids", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(INDEX_CHUNK_ROWS,))
        group.create_dataset("paths", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(INDEX_CHUNK_ROWS,))
        return group

    def create_split(self, split: str, views: int, dim: int) -> None:
        """Create `split` with no rows yet, so that a split with no images still exists in the file."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self._group(split, views, dim)

    def append(self, split: str, batch: FeatureSplit) -> None:
        """Append one batch of rows to `split` (created on first use with the batch's V and D)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        n, views, dim = batch.features.shape
        group = self._group(split, views, dim)
        if group["features"].shape[1:] != (views, dim):
            raise ValueError(
                f"split {split} holds rows of shape {group['features'].shape[1:]}, "
                f"cannot append rows of shape {(views, dim)}"
            )
        start = self.rows[split]
        self._check_space(
            batch.features.nbytes + 16 * n + sum(len(p) + 16 for p in batch.paths), group["features"].chunks
        )
        for name, values in (
            ("features", batch.features),
            ("pids", batch.pids),
            ("camids", batch.camids),
            ("paths", np.asarray(batch.paths, dtype=object)),
        ):
            group[name].resize(start + n, axis=0)
            group[name][start : start + n] = values
        self.rows[split] = start + n
        self._h5.flush()

    def _check_space(self, batch_bytes: int, chunks: tuple[int, ...]) -> None:
        """OSError(ENOSPC) naming the output unless the batch, a few chunks and the margin fit on the disk."""
        stats = os.statvfs(self._tmp)
        if stats.f_blocks == 0:
            return  # a file system that reports no size (some FUSE mounts): nothing to check against
        free = stats.f_bavail * stats.f_frsize
        needed = batch_bytes + 4 * 4 * int(np.prod(chunks)) + SPACE_MARGIN_BYTES
        if free < needed:
            raise OSError(
                errno.ENOSPC,
                f"{os.strerror(errno.ENOSPC)} (the next batch needs about "
                f"{needed >> 20} MiB with reserve, {free >> 20} MiB are free)",
                str(self.path),
            )

    def close(self) -> Path:
        """Write `complete=1` last, flush, and rename the temporary file to its final name."""
        try:
            self._check_space(0, (1,))
            self._h5.attrs["complete"] = 1
            self._h5.flush()
            self._h5.close()
        except BaseException as exc:
            self.abort(exc)
            raise
        self._stack.close()
        return self.path

    def abort(self, exc: BaseException | None = None) -> None:
        """Close and delete the temporary file; nothing appears at the final name. An OSError `exc` comes back
        naming the output (see `atomic_path`)."""
        if self._h5.id.valid:
            self._h5.close()
        exc = exc or HavanaError("feature writing aborted")
        self._stack.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)


def write_features(path: str | os.PathLike, splits: Mapping[str, FeatureSplit], attrs: Mapping[str, Any]) -> None:
    """Write whole in-memory splits to a complete feature file atomically."""
    with FeatureWriter(path, attrs) as writer:
        for name, split in splits.items():
            writer.create_split(name, split.features.shape[1], split.features.shape[2])
            if len(split.features):
                writer.append(name, split)


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of a complete feature file (HavanaError for a missing or incomplete one)."""
    path = Path(path)
    if not path.is_file():
        raise HavanaError(f"feature file {path} does not exist; run `havana extract` to create it.")
    try:
        with h5py.File(path, "r") as h5:
            attrs = {key: _plain(value) for key, value in h5.attrs.items()}
    except OSError:
        raise HavanaError(
            f"feature file {path} is not a readable HDF5 file; delete it and rerun `havana extract`."
        ) from None
    if attrs.get("complete") != 1:
        raise HavanaError(
            f"feature file {path} is incomplete (no complete=1 attribute: extraction was interrupted); "
            "delete it and rerun `havana extract`."
        )
    return attrs


def read_features(path: str | os.PathLike, splits: Iterable[str] = SPLITS) -> FeatureFile:
    """Read the named splits of a complete feature file into memory."""
    attrs = read_attrs(path)
    loaded: dict[str, FeatureSplit] = {}
    with h5py.File(path, "r") as h5:
        for name in splits:
            if name not in h5:
                raise HavanaError(
                    f"feature file {path} has no '{name}' split (it has {', '.join(h5)}); "
                    "rerun `havana extract` on a manifest with that split."
                )
            group = h5[name]
            try:
                loaded[name] = FeatureSplit(
                    features=group["features"][...],
                    pids=group["pids"][...],
                    camids=group["camids"][...],
                    paths=list(group["paths"].asstr()[...]),
                )
            except (KeyError, ValueError, TypeError, UnicodeDecodeError, AttributeError) as exc:
                raise HavanaError(
                    f"feature file {path} has an inconsistent '{name}' split ({exc}); it was not "
                    "written by `havana extract`, so delete it and rerun `havana extract`."
                ) from None
    return FeatureFile(attrs=attrs, splits=loaded)

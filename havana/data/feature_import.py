"""Import features extracted elsewhere into havana's HDF5 feature file, after checking them (`havana import-features`).

This lets features from another framework go into havana's heads and evaluation without training or `havana extract`.

Accepted sources:

- `.h5` / `.hdf5` in havana's schema (docs/design.md "HDF5 feature file"): groups train/query/gallery with `features`
  [N, V, D], `pids`, `camids`, `paths`, and `complete=1`. Its root attributes are carried over.
- `.npz` (numpy.savez) with these arrays, for split in train, query, gallery (all three required):
  - `{split}_features`: float16/32/64, [N, V, D] or [N, D] (V = 1). Values must be finite and are stored as
    float32. Train may have any V ≥ 1 (view 0 un-augmented, as `havana extract` writes it). Query and gallery
    have V = 1 or 2 (plain, horizontally flipped). With V = 1 the flipped view is written as a copy of the plain
    one, so havana's flip ranking then equals the plain ranking; the file says so in its `flipped_view`
    attribute.
  - `{split}_pids`, `{split}_camids`: integer arrays [N]; camids 0-based as in havana's manifests.
  - `{split}_paths` (optional): unicode strings [N], relative to the dataset root like a manifest's `path`.
  Any other array is refused, so that a misspelt key is caught rather than ignored.
  D must be the same for every split.

With a manifest (CSV path,pid,camid,split), each split must have the manifest's images. If the source has paths,
rows are matched by path and each pid and camid must agree. If it has none, the rows must follow the manifest's
order, and paths are taken from the manifest. Without a manifest and without paths, paths are empty strings:
evaluation and heads still work, but ranked-list figures, which open the images, do not.

Each problem found is one sentence on its own line; all problems are reported together. The output is written
by havana's `write_features`: a temporary file, then `os.replace`, with `complete=1` written last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from havana.data.features import SPLITS, FeatureSplit, write_features
from havana.errors import HavanaError
from havana.utils.provenance import file_sha256

ARRAYS = ("features", "pids", "camids", "paths")  # per split; paths optional
FLIP_COPIED = "copied from the plain view (the source had one view)"


@dataclass
class RawSplit:
    """One split as read from the source, before any check: arrays as stored, paths None when absent."""

    features: Any
    pids: Any
    camids: Any
    paths: list[str] | None


def _read_npz(src: Path, problems: list[str]) -> dict[str, RawSplit]:
    """The splits of an `.npz`; missing, unknown and unreadable arrays become problems."""
    try:
        archive = np.load(src, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise HavanaError(
            f"{src} is not a readable .npz file ({type(exc).__name__}); write it with numpy.savez."
        ) from None
    with archive:
        expected = {f"{s}_{a}" for s in SPLITS for a in ARRAYS}
        unknown = sorted(set(archive.files) - expected)
        if unknown:
            problems.append(
                f"{src} has arrays {', '.join(unknown)} that havana does not read; expected "
                f"{{train,query,gallery}}_{{{','.join(ARRAYS)}}} (paths optional)."
            )
        arrays: dict[str, Any] = {}
        for key in sorted(expected & set(archive.files)):
            try:
                arrays[key] = archive[key]
            except ValueError:  # an object array under allow_pickle=False
                problems.append(
                    f"`{key}` is an object array; store it as a plain numpy array (paths: np.array(paths, dtype=str))."
                )
    splits: dict[str, RawSplit] = {}
    for split in SPLITS:
        absent = [f"`{split}_{a}`" for a in ARRAYS[:3] if f"{split}_{a}" not in arrays]
        if absent:
            problems.append(
                f"{src} lacks {', '.join(absent)}; every split (train, query, gallery) needs features, pids and camids."
            )
            continue
        paths = arrays.get(f"{split}_paths")
        splits[split] = RawSplit(
            arrays[f"{split}_features"],
            arrays[f"{split}_pids"],
            arrays[f"{split}_camids"],
            None if paths is None else paths,
        )
    return splits


def _read_h5(src: Path, problems: list[str]) -> tuple[dict[str, RawSplit], dict[str, Any]]:
    """The splits and root attributes of an HDF5 file in havana's schema (refused unless complete=1)."""
    try:
        with h5py.File(src, "r") as h5:
            attrs = {
                k: (v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic) else v)
                for k, v in h5.attrs.items()
            }
            if attrs.get("complete") != 1:
                raise HavanaError(f"{src} has no complete=1 attribute (its writer was interrupted); recreate it.")
            splits: dict[str, RawSplit] = {}
            for split in SPLITS:
                group = h5.get(split)
                absent = [f"`{split}/{a}`" for a in ARRAYS if group is None or a not in group]
                if absent:
                    problems.append(
                        f"{src} lacks {', '.join(absent)}; havana's schema has groups train, query and "
                        "gallery with features, pids, camids and paths."
                    )
                    continue
                paths = group["paths"]
                paths = list(paths.asstr()[...]) if h5py.check_string_dtype(paths.dtype) else paths[...]
                splits[split] = RawSplit(group["features"][...], group["pids"][...], group["camids"][...], paths)
    except OSError as exc:
        raise HavanaError(f"{src} is not a readable HDF5 file ({exc.__class__.__name__}).") from None
    attrs.pop("complete", None)
    return splits, attrs


def _check_split(name: str, raw: RawSplit, problems: list[str]) -> FeatureSplit | None:
    """A checked FeatureSplit [N, V, D] float32, or None after appending this split's problems."""
    features, pids, camids = np.asarray(raw.features), np.asarray(raw.pids), np.asarray(raw.camids)
    before = len(problems)
    if not np.issubdtype(features.dtype, np.floating):
        problems.append(f"{name} features have dtype {features.dtype}; expected float16, float32 or float64.")
    elif features.ndim not in (2, 3):
        problems.append(f"{name} features have shape {features.shape}; expected [N, D] or [N, V, D].")
    for label, values in (("pids", pids), ("camids", camids)):
        if not np.issubdtype(values.dtype, np.integer):
            problems.append(f"{name} {label} have dtype {values.dtype}; expected integers.")
        elif values.ndim != 1 or len(values) != len(features):
            problems.append(
                f"{name} {label} have shape {values.shape}; expected ({len(features)},), one per feature row."
            )
    paths = raw.paths
    if paths is not None:
        paths = np.asarray(paths)
        if paths.dtype.kind not in "US" or paths.shape != (len(features),):
            problems.append(
                f"{name} paths have dtype {paths.dtype} and shape {paths.shape}; expected {len(features)} strings."
            )
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in paths.tolist()]
    if len(problems) > before:
        return None
    if features.ndim == 2:
        features = features[:, None, :]
    n, views, dim = features.shape
    if n == 0 or dim == 0:
        problems.append(
            f"{name} features have shape {features.shape}; every split needs at least one row and one dimension."
        )
    elif name == "train" and views < 1:
        problems.append(f"train features have {views} views; expected at least 1.")
    elif name != "train" and views not in (1, 2):
        problems.append(f"{name} features have {views} views; expected 1 (plain) or 2 (plain, flipped).")
    if len(problems) > before:
        return None
    features = features.astype(np.float32, copy=False)
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=(1, 2)))
        problems.append(
            f"{name} features have {int(bad.sum())} NaN or infinite values (as float32) in {len(rows)} "
            f"rows, the first at row {int(rows[0])}."
        )
        return None
    if name != "train" and views == 1:
        features = np.concatenate([features, features], axis=1)  # the flipped view: a copy of the plain one
    return FeatureSplit(features=features, pids=pids, camids=camids, paths=paths if paths is not None else [""] * n)


def _check_manifest(name: str, split: FeatureSplit, has_paths: bool, rows: Any, problems: list[str]) -> None:
    """Checks `split` against the manifest's rows of that split; fills in paths from the manifest when it has none."""
    want_pids, want_camids = rows["pid"].to_numpy(), rows["camid"].to_numpy()
    want_paths = rows["path"].astype(str).tolist()
    if len(split.pids) != len(rows):
        problems.append(f"{name} has {len(split.pids)} rows but the manifest lists {len(rows)} {name} images.")
    missing = sorted(set(want_pids.tolist()) - set(split.pids.tolist()))
    extra = sorted(set(split.pids.tolist()) - set(want_pids.tolist()))
    if missing:
        problems.append(f"{name} lacks {len(missing)} identities the manifest lists ({_few(missing)}).")
    if extra:
        problems.append(f"{name} has {len(extra)} identities the manifest does not list ({_few(extra)}).")
    if missing or extra or len(split.pids) != len(rows):
        return
    if has_paths:
        index = {p: i for i, p in enumerate(want_paths)}
        unknown = [p for p in split.paths if p not in index]
        repeated = sorted({p for p in split.paths if split.paths.count(p) > 1}) if not unknown else []
        if unknown:
            problems.append(
                f"{name} has {len(unknown)} paths that are not {name} images of the manifest ({_few(unknown)})."
            )
        if repeated:
            problems.append(f"{name} repeats {len(repeated)} paths ({_few(repeated)}); each image must appear once.")
        if unknown or repeated:
            return
        order = np.array([index[p] for p in split.paths])
        want_pids, want_camids = want_pids[order], want_camids[order]
    wrong = np.flatnonzero((split.pids != want_pids) | (split.camids != want_camids))
    if len(wrong):
        i = int(wrong[0])
        where = f"image {split.paths[i]}" if has_paths else f"the manifest's {name} row {i}"
        order = "" if has_paths else "; without paths, rows must follow the manifest's order"
        problems.append(
            f"{name} row {i} has pid {split.pids[i]} camid {split.camids[i]} but {where} has pid "
            f"{want_pids[i]} camid {want_camids[i]} ({len(wrong)} rows differ){order}."
        )
    elif not has_paths:
        split.paths = want_paths


def _few(values: list[Any], limit: int = 5) -> str:
    return ", ".join(str(v) for v in values[:limit]) + (", …" if len(values) > limit else "")


def import_features(
    src: str | os.PathLike,
    out: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    *,
    dataset: str | None = None,
    extractor: str | None = None,
) -> Path:
    """Check `src` (havana-schema `.h5` or the `.npz` layout above) and write it as havana's HDF5 file `out`."""
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise HavanaError(f"feature source {src} does not exist; check the path.")
    problems: list[str] = []
    attrs: dict[str, Any] = {}
    if src.suffix.lower() in (".h5", ".hdf5"):
        raw, attrs = _read_h5(src, problems)
    elif src.suffix.lower() == ".npz":
        raw = _read_npz(src, problems)
    else:
        raise HavanaError(f"feature source {src} is neither .h5/.hdf5 (havana's schema) nor .npz; convert it to one.")
    splits = {name: s for name, r in raw.items() if (s := _check_split(name, r, problems)) is not None}
    dims = {name: s.features.shape[2] for name, s in splits.items()}
    if len(set(dims.values())) > 1:
        problems.append(
            f"feature widths differ between splits ({', '.join(f'{k} {v}' for k, v in dims.items())}); "
            "every split must come from the same extractor."
        )
    if manifest is not None:
        from havana.data.datasets import read_manifest

        table = read_manifest(manifest)
        for name, split in splits.items():
            _check_manifest(name, split, raw[name].paths is not None, table[table["split"] == name], problems)
    if problems:
        raise HavanaError("\n".join(problems))
    single_view = [n for n in ("query", "gallery") if raw[n].features.ndim == 2 or raw[n].features.shape[1] == 1]
    attrs.update(
        {
            "dataset": dataset or attrs.get("dataset") or (Path(manifest).parent.name if manifest else ""),
            "extractor": extractor or attrs.get("extractor") or src.stem,
            "views": int(splits["train"].features.shape[1]),
            "imported_from": str(src),
            "source_sha256": file_sha256(src),
        }
    )
    for key in ("checkpoint_sha256", "config_hash", "image_size", "created_by"):
        attrs.setdefault(key, "unknown (imported)" if key != "created_by" else "havana import-features")
    if manifest is not None:
        attrs["manifest_sha256"] = file_sha256(Path(manifest))
    attrs.setdefault("manifest_sha256", "")
    if single_view:
        attrs["flipped_view"] = FLIP_COPIED
    write_features(out, {name: splits[name] for name in SPLITS}, attrs)
    return out


def export_npz(features: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a havana feature file in the `.npz` layout above (every view, paths included), atomically: the file
    `import_features` reads back to the same arrays."""
    from havana.data.features import read_features
    from havana.utils.atomic import atomic_path

    read = read_features(features)
    arrays = {}
    for split in SPLITS:
        part = read[split]
        arrays.update(
            {
                f"{split}_features": part.features,
                f"{split}_pids": part.pids,
                f"{split}_camids": part.camids,
                f"{split}_paths": np.array(part.paths, dtype=str),
            }
        )
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:  # a handle: numpy.savez would append .npz to a name
        np.savez(handle, **arrays)
    return Path(out)

"""Feature import: a good .npz or .h5 round-trips to equal arrays in havana's schema; each bad input is refused with
one sentence per problem (one line each), and nothing is written then."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from havana.data.feature_import import FLIP_COPIED, import_features
from havana.data.features import read_features
from havana.errors import HavanaError

SIZES = {"train": (6, 3), "query": (3, 1), "gallery": (5, 2)}  # rows, views (query single-view: flip copied)
DIM = 8


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A good npz's arrays: pids 0..2, camids 0..1, paths like a manifest's."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for split, (n, views) in SIZES.items():
        feats = rng.standard_normal((n, views, DIM)).astype(np.float32)
        out[f"{split}_features"] = feats[:, 0] if views == 1 else feats
        out[f"{split}_pids"] = np.arange(n, dtype=np.int64) % 3
        out[f"{split}_camids"] = np.arange(n, dtype=np.int32) % 2
        out[f"{split}_paths"] = np.array([f"{split}/{i:04d}.jpg" for i in range(n)])
    return out


def manifest(path: Path, data: dict[str, np.ndarray]) -> Path:
    lines = ["path,pid,camid,split"] + [
        f"{p},{pid},{cam},{split}"
        for split in SIZES
        for p, pid, cam in zip(data[f"{split}_paths"], data[f"{split}_pids"], data[f"{split}_camids"])
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def refused(tmp_path: Path, data: dict[str, np.ndarray], with_manifest: bool = False) -> list[str]:
    """The problem lines import_features raises for `data`; checks that no output was left behind."""
    src, out = tmp_path / "bad.npz", tmp_path / "out" / "features.h5"
    np.savez(src, **data)
    good = manifest(tmp_path / "manifest.csv", arrays()) if with_manifest else None
    with pytest.raises(HavanaError) as info:
        import_features(src, out, good)
    assert not out.exists()
    lines = str(info.value).splitlines()
    assert all(line.endswith(".") for line in lines)
    return lines


def test_npz_round_trip(tmp_path: Path) -> None:
    data = arrays()
    np.savez(tmp_path / "src.npz", **data)
    out = import_features(
        tmp_path / "src.npz",
        tmp_path / "features.h5",
        manifest(tmp_path / "m.csv", data),
        dataset="market1501",
        extractor="bot-r50",
    )
    read = read_features(out)
    assert read.attrs["complete"] == 1 and read.attrs["views"] == 3 and read.attrs["flipped_view"] == FLIP_COPIED
    assert read.attrs["dataset"] == "market1501" and read.attrs["extractor"] == "bot-r50"
    for split, (_, views) in SIZES.items():
        got, feats = read[split], data[f"{split}_features"]
        want = np.stack([feats, feats], axis=1) if views == 1 else feats
        np.testing.assert_array_equal(got.features, want)
        np.testing.assert_array_equal(got.pids, data[f"{split}_pids"])
        np.testing.assert_array_equal(got.camids, data[f"{split}_camids"])
        assert got.paths == data[f"{split}_paths"].tolist()


def test_h5_round_trip_and_paths_from_manifest(tmp_path: Path) -> None:
    data = arrays()
    no_paths = {k: v for k, v in data.items() if not k.endswith("_paths")}
    np.savez(tmp_path / "src.npz", **no_paths)
    first = import_features(tmp_path / "src.npz", tmp_path / "a.h5", manifest(tmp_path / "m.csv", data))
    second = import_features(first, tmp_path / "b.h5")  # havana's own schema back in
    a, b = read_features(first), read_features(second)
    for split in SIZES:
        np.testing.assert_array_equal(a[split].features, b[split].features)
        assert a[split].paths == b[split].paths == data[f"{split}_paths"].tolist()
    assert b.attrs["imported_from"] == str(first)


def test_nan(tmp_path: Path) -> None:
    data = arrays()
    data["gallery_features"][2, 1, 3] = np.nan
    assert refused(tmp_path, data) == [
        "gallery features have 1 NaN or infinite values (as float32) in 1 rows, the first at row 2."
    ]


def test_width_differs_between_splits(tmp_path: Path) -> None:
    data = arrays()
    data["query_features"] = data["query_features"][:, :4]
    [line] = refused(tmp_path, data)
    assert line.startswith("feature widths differ between splits (train 8, query 4, gallery 8)")


def test_missing_ids(tmp_path: Path) -> None:
    data = arrays()
    data["gallery_pids"] = np.array([0, 1, 0, 1, 0])  # identity 2 gone
    assert "gallery lacks 1 identities the manifest lists (2)." in refused(tmp_path, data, with_manifest=True)


def test_wrong_dtype(tmp_path: Path) -> None:
    data = arrays()
    data["train_pids"] = data["train_pids"].astype(np.float64)
    assert refused(tmp_path, data) == ["train pids have dtype float64; expected integers."]


def test_integer_features(tmp_path: Path) -> None:
    data = arrays()
    data["query_features"] = np.zeros((3, DIM), dtype=np.int64)
    assert refused(tmp_path, data) == ["query features have dtype int64; expected float16, float32 or float64."]


def test_too_many_query_views(tmp_path: Path) -> None:
    data = arrays()
    data["query_features"] = np.zeros((3, 3, DIM), dtype=np.float32)
    assert refused(tmp_path, data) == ["query features have 3 views; expected 1 (plain) or 2 (plain, flipped)."]


def test_rows_out_of_manifest_order(tmp_path: Path) -> None:
    data = {k: v for k, v in arrays().items() if not k.endswith("_paths")}
    data["query_pids"] = data["query_pids"][::-1].copy()  # [2, 1, 0]: same identities, another order
    assert refused(tmp_path, data, with_manifest=True) == [
        "query row 0 has pid 2 camid 0 but the manifest's query row 0 has pid 0 camid 0 (2 rows differ); without "
        "paths, rows must follow the manifest's order."
    ]


def test_several_problems_one_line_each(tmp_path: Path) -> None:
    data = arrays()
    del data["train_camids"]
    data["gallery_features"][0, 0, 0] = np.inf
    data["query_feature"] = data.pop("query_features")  # misspelt
    lines = refused(tmp_path, data)
    assert len(lines) == 4, lines
    assert lines[0].startswith(f"{tmp_path / 'bad.npz'} has arrays query_feature that havana does not read")


def test_path_not_in_manifest(tmp_path: Path) -> None:
    data = arrays()
    data["gallery_paths"] = np.array([*data["gallery_paths"][:4], "elsewhere/9999.jpg"])
    assert refused(tmp_path, data, with_manifest=True) == [
        "gallery has 1 paths that are not gallery images of the manifest (elsewhere/9999.jpg)."
    ]

"""HDF5 feature store: exact round trip, streaming writes, and refusal of missing or incomplete files."""

import h5py
import numpy as np
import pytest

from havana.data.features import FeatureSplit, FeatureWriter, read_attrs, read_features, write_features
from havana.errors import HavanaError

ATTRS = {
    "dataset": "synthetic",
    "extractor": "bot_r18",
    "checkpoint_sha256": "ab" * 32,
    "manifest_sha256": "cd" * 32,
    "config_hash": "ef" * 32,
    "image_size": [32, 16],
    "views": 3,
    "created_by": "havana 0.1.0",
}


def _split(rng, n, views, dim=5, prefix="img"):
    return FeatureSplit(
        features=rng.normal(size=(n, views, dim)).astype(np.float32),
        pids=rng.integers(0, 9, size=n),
        camids=rng.integers(0, 3, size=n),
        paths=[f"{prefix}/ü_{i:03d}.jpg" for i in range(n)],
    )


def _assert_same(a: FeatureSplit, b: FeatureSplit):
    assert a.features.dtype == np.float32 and a.pids.dtype == np.int64 and a.camids.dtype == np.int64
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.pids, b.pids)
    np.testing.assert_array_equal(a.camids, b.camids)
    assert a.paths == b.paths


def test_round_trip_is_exact_and_keeps_attrs(tmp_path):
    rng = np.random.default_rng(0)
    splits = {"train": _split(rng, 7, 3), "query": _split(rng, 4, 2), "gallery": _split(rng, 6, 2)}
    path = tmp_path / "f.h5"
    write_features(path, splits, ATTRS)
    loaded = read_features(path)
    for name in splits:
        _assert_same(loaded[name], splits[name])
    assert loaded.attrs == {**ATTRS, "complete": 1}
    assert list(read_features(path, splits=("query",)).splits) == ["query"]
    assert [p.name for p in tmp_path.iterdir()] == ["f.h5"]  # no temporary left behind


def test_streamed_batches_equal_one_write(tmp_path):
    rng = np.random.default_rng(1)
    whole = _split(rng, 10, 2)
    with FeatureWriter(tmp_path / "s.h5", ATTRS) as writer:
        for lo, hi in [(0, 3), (3, 4), (4, 10)]:
            writer.append(
                "gallery",
                FeatureSplit(whole.features[lo:hi], whole.pids[lo:hi], whole.camids[lo:hi], whole.paths[lo:hi]),
            )
    _assert_same(read_features(tmp_path / "s.h5", splits=("gallery",))["gallery"], whole)


def test_crash_while_writing_leaves_no_file(tmp_path):
    rng = np.random.default_rng(2)
    with pytest.raises(RuntimeError):
        with FeatureWriter(tmp_path / "c.h5", ATTRS) as writer:
            writer.append("train", _split(rng, 3, 2))
            raise RuntimeError("killed mid-extraction")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_file_is_refused(tmp_path):
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as h5:  # what a writer without complete=1 would leave
        h5.attrs["dataset"] = "synthetic"
        h5.create_group("train")
    with pytest.raises(HavanaError, match="incomplete"):
        read_features(path)
    with pytest.raises(HavanaError, match="incomplete"):
        read_attrs(path)


def test_missing_or_unreadable_file_is_refused(tmp_path):
    with pytest.raises(HavanaError, match="does not exist"):
        read_features(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(HavanaError, match="not a readable HDF5"):
        read_features(tmp_path / "junk.h5")


def test_missing_split_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(3)
    write_features(tmp_path / "q.h5", {"query": _split(rng, 2, 2)}, ATTRS)
    with pytest.raises(HavanaError, match="no 'train' split"):
        read_features(tmp_path / "q.h5")


def test_empty_split_exists_with_its_shape(tmp_path):
    empty = FeatureSplit(np.zeros((0, 2, 5), np.float32), [], [], [])
    write_features(tmp_path / "e.h5", {"query": empty}, ATTRS)
    assert read_features(tmp_path / "e.h5", splits=("query",))["query"].features.shape == (0, 2, 5)

"""Dataset registry and parsers: each real layout, fabricated on disk, parses into exactly the expected manifest."""

from __future__ import annotations

import fabricate
import pandas as pd
import pytest

from havana.data import datasets
from havana.errors import HavanaError


def rows(manifest: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in manifest[["path", "pid", "camid", "split"]].itertuples(index=False)]


def test_registry_names_and_unknown_name():
    assert list(datasets.DATASETS) == ["market1501", "dukemtmc", "msmt17", "synthetic"]
    assert datasets.get_dataset("msmt17") is datasets.MSMT17
    with pytest.raises(
        HavanaError, match="unknown dataset 'market'; choose one of market1501, dukemtmc, msmt17, synthetic"
    ):
        datasets.get_dataset("market")


@pytest.mark.parametrize(
    "name,stats",
    [
        ("market1501", {"train": (751, 12936), "query": (750, 3368), "gallery": (751, 15913)}),
        ("dukemtmc", {"train": (702, 16522), "query": (702, 2228), "gallery": (1110, 17661)}),
        ("msmt17", {"train": (1041, 30248), "query": (3060, 11659), "gallery": (3060, 82161)}),
    ],
)
def test_official_statistics_are_table_1(name, stats):
    dataset = datasets.get_dataset(name)
    assert dataset.official == stats
    for ids, images in stats.values():
        assert f"{ids} / {images}" in dataset.__doc__  # the docstring states the same numbers


def test_market1501_parser_drops_junk_keeps_distractors_ignores_stray_files(tmp_path):
    top = fabricate.fabricate_market1501(tmp_path)
    manifest = datasets.Market1501().parse(top)
    assert rows(manifest) == [
        ("bounding_box_train/0002_c1s1_000451_03.jpg", 2, 0, "train"),
        ("bounding_box_train/0002_c2s1_000551_01.jpg", 2, 1, "train"),
        ("bounding_box_train/0007_c3s3_077419_03.jpg", 7, 2, "train"),
        ("bounding_box_train/0007_c6s4_002627_02.jpg", 7, 5, "train"),
        ("query/0003_c1s1_000003_00.jpg", 3, 0, "query"),
        ("query/0005_c2s1_000004_00.jpg", 5, 1, "query"),
        ("bounding_box_test/0000_c1s1_000001_01.jpg", 0, 0, "gallery"),
        ("bounding_box_test/0003_c4s1_000001_01.jpg", 3, 3, "gallery"),
        ("bounding_box_test/0003_c5s2_000002_01.jpg", 3, 4, "gallery"),
        ("bounding_box_test/0005_c6s1_000003_01.jpg", 5, 5, "gallery"),
    ]
    assert datasets.split_statistics(manifest) == {"train": (2, 4), "query": (2, 2), "gallery": (3, 4)}


def test_market1501_rejects_a_camera_it_does_not_have(tmp_path):
    top = fabricate.fabricate_market1501(tmp_path)
    (top / "bounding_box_train/0002_c7s1_000001_01.jpg").write_bytes(fabricate.tiny_jpeg(2))
    with pytest.raises(HavanaError, match="names camera 7, but market1501 has cameras 1..6"):
        datasets.Market1501().parse(top)


def test_dukemtmc_parser_eight_cameras(tmp_path):
    top = fabricate.fabricate_dukemtmc(tmp_path)
    dataset = datasets.DukeMTMCReID()
    assert dataset.is_top(top) and not datasets.Market1501().is_top(top)
    assert rows(dataset.parse(top)) == [
        ("bounding_box_train/0001_c2_f0046182.jpg", 1, 1, "train"),
        ("bounding_box_train/0001_c8_f0000001.jpg", 1, 7, "train"),
        ("bounding_box_train/0004_c5_f0001234.jpg", 4, 4, "train"),
        ("query/0005_c1_f0000002.jpg", 5, 0, "query"),
        ("bounding_box_test/0005_c3_f0000010.jpg", 5, 2, "gallery"),
        ("bounding_box_test/0009_c7_f0000020.jpg", 9, 6, "gallery"),
    ]


MSMT17_EXPECTED = [
    ("{train}/0000/0000_000_01_0303morning_0015_0.jpg", 0, 0, "train"),
    ("{train}/0001/0001_001_15_0303noon_0020_1.jpg", 1, 14, "train"),
    ("{test}/0000/0000_000_03_0303afternoon_0100_0.jpg", 0, 2, "query"),
    ("{test}/0000/0000_001_07_0113morning_0200_1.jpg", 0, 6, "gallery"),
    ("{test}/0001/0001_000_12_0113noon_0300_0.jpg", 1, 11, "gallery"),
]
MSMT17_VAL_ROW = ("{train}/0002/0002_000_05_0303afternoon_0030_0.jpg", 2, 4, "train")


@pytest.mark.parametrize("version,train,test", [("V1", "train", "test"), ("V2", "mask_train_v2", "mask_test_v2")])
def test_msmt17_parser_list_files_fifteen_cameras_pid_zero_real(tmp_path, version, train, test):
    top = fabricate.fabricate_msmt17(tmp_path, version)
    fill = lambda row: (row[0].format(train=train, test=test), *row[1:])  # noqa: E731
    assert datasets.MSMT17().is_top(top)
    assert rows(datasets.MSMT17().parse(top)) == [fill(r) for r in MSMT17_EXPECTED]
    with_val = [fill(r) for r in MSMT17_EXPECTED[:2] + [MSMT17_VAL_ROW] + MSMT17_EXPECTED[2:]]
    assert rows(datasets.MSMT17(include_val=True).parse(top)) == with_val
    assert datasets.MSMT17(include_val=True).expected_statistics(top)["train"] == (1041, 32621)


def test_msmt17_missing_listed_image_is_a_clear_error(tmp_path):
    top = fabricate.fabricate_msmt17(tmp_path)
    (top / "test/0001/0001_000_12_0113noon_0300_0.jpg").unlink()
    with pytest.raises(
        HavanaError, match="list_gallery.txt line 2 lists test/0001/0001_000_12_0113noon_0300_0.jpg, which is missing"
    ):
        datasets.MSMT17().parse(top)


def test_manifest_round_trip_and_validation(tmp_path):
    manifest = datasets.Market1501().parse(fabricate.fabricate_market1501(tmp_path))
    path = tmp_path / "out" / "manifest.csv"
    datasets.write_manifest(path, manifest)
    assert path.read_text().splitlines()[:2] == [
        "path,pid,camid,split",
        "bounding_box_train/0002_c1s1_000451_03.jpg,2,0,train",
    ]
    back = datasets.read_manifest(path)
    pd.testing.assert_frame_equal(back, manifest)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left beside it
    path.write_text("path,pid,split\na.jpg,1,train\n")
    with pytest.raises(HavanaError, match="has columns"):
        datasets.read_manifest(path)
    with pytest.raises(HavanaError, match="does not exist; create it with `havana prepare"):
        datasets.read_manifest(tmp_path / "nowhere.csv")

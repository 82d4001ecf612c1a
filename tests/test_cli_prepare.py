"""`havana prepare` end to end: fabricated archives give exact manifests; every bad archive is one sentence, exit 2."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import fabricate
import pytest

from havana.cli import main

MARKET_MANIFEST = """path,pid,camid,split
Market-1501-v15.09.15/bounding_box_train/0002_c1s1_000451_03.jpg,2,0,train
Market-1501-v15.09.15/bounding_box_train/0002_c2s1_000551_01.jpg,2,1,train
Market-1501-v15.09.15/bounding_box_train/0007_c3s3_077419_03.jpg,7,2,train
Market-1501-v15.09.15/bounding_box_train/0007_c6s4_002627_02.jpg,7,5,train
Market-1501-v15.09.15/query/0003_c1s1_000003_00.jpg,3,0,query
Market-1501-v15.09.15/query/0005_c2s1_000004_00.jpg,5,1,query
Market-1501-v15.09.15/bounding_box_test/0000_c1s1_000001_01.jpg,0,0,gallery
Market-1501-v15.09.15/bounding_box_test/0003_c4s1_000001_01.jpg,3,3,gallery
Market-1501-v15.09.15/bounding_box_test/0003_c5s2_000002_01.jpg,3,4,gallery
Market-1501-v15.09.15/bounding_box_test/0005_c6s1_000003_01.jpg,5,5,gallery
"""

DUKE_MANIFEST = """path,pid,camid,split
DukeMTMC-reID/bounding_box_train/0001_c2_f0046182.jpg,1,1,train
DukeMTMC-reID/bounding_box_train/0001_c8_f0000001.jpg,1,7,train
DukeMTMC-reID/bounding_box_train/0004_c5_f0001234.jpg,4,4,train
DukeMTMC-reID/query/0005_c1_f0000002.jpg,5,0,query
DukeMTMC-reID/bounding_box_test/0005_c3_f0000010.jpg,5,2,gallery
DukeMTMC-reID/bounding_box_test/0009_c7_f0000020.jpg,9,6,gallery
"""

MSMT17_MANIFEST = """path,pid,camid,split
MSMT17_V1/train/0000/0000_000_01_0303morning_0015_0.jpg,0,0,train
MSMT17_V1/train/0001/0001_001_15_0303noon_0020_1.jpg,1,14,train
MSMT17_V1/test/0000/0000_000_03_0303afternoon_0100_0.jpg,0,2,query
MSMT17_V1/test/0000/0000_001_07_0113morning_0200_1.jpg,0,6,gallery
MSMT17_V1/test/0001/0001_000_12_0113noon_0300_0.jpg,1,11,gallery
"""


def prepare(capsys, *argv) -> tuple[int, str, str]:
    """Run `havana prepare ...` in-process and return (exit status, stdout, stderr)."""
    status = main(["prepare", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_sentence_error(status: int, err: str, *fragments: str) -> None:
    """Exit 2, no traceback, and a last stderr line `havana prepare: error: <one sentence>.` holding `fragments`."""
    assert status == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("havana prepare: error: ") and last.endswith(".")
    for fragment in fragments:
        assert fragment in last


@pytest.mark.parametrize(
    "dataset,fabricate_top,archive_name,expected",
    [
        ("market1501", fabricate.fabricate_market1501, "Market-1501-v15.09.15.zip", MARKET_MANIFEST),
        ("dukemtmc", fabricate.fabricate_dukemtmc, "DukeMTMC-reID.zip", DUKE_MANIFEST),
        ("msmt17", fabricate.fabricate_msmt17, "MSMT17_V1.tar.gz", MSMT17_MANIFEST),
    ],
)
def test_prepare_writes_exactly_the_expected_manifest(tmp_path, capsys, dataset, fabricate_top, archive_name, expected):
    fabricate_top(tmp_path / "src")
    make = fabricate.make_zip if archive_name.endswith(".zip") else fabricate.make_tar
    archive = make(tmp_path / "src", tmp_path / archive_name)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    status, out, err = prepare(capsys, dataset, "--root", tmp_path / "R", "--archive", archive, "--sha256", digest)
    assert status == 0, err
    manifest = tmp_path / "R" / dataset / "manifest.csv"
    assert manifest.read_text() == expected
    assert (tmp_path / "R" / dataset / "manifest.csv.provenance.yaml").is_file()
    assert "split" in out and "official" in out and f"prepared {dataset}:" in out.splitlines()[-1]
    assert "differs from its official statistics" in err  # a tiny subset: warned, not failed
    # a rerun is idempotent and gives the same manifest
    status, _, err = prepare(capsys, dataset, "--root", tmp_path / "R", "--archive", archive)
    assert status == 0, err
    assert manifest.read_text() == expected


def test_prepare_msmt17_include_val_adds_list_val(tmp_path, capsys):
    fabricate.fabricate_msmt17(tmp_path / "src")
    archive = fabricate.make_tar(tmp_path / "src", tmp_path / "MSMT17_V1.tar.gz")
    status, out, _ = prepare(capsys, "msmt17", "--root", tmp_path / "R", "--archive", archive, "--msmt17-include-val")
    assert status == 0
    lines = (tmp_path / "R/msmt17/manifest.csv").read_text().splitlines()
    assert "MSMT17_V1/train/0002/0002_000_05_0303afternoon_0030_0.jpg,2,4,train" in lines and len(lines) == 7
    assert "32621" in out
    status, _, err = prepare(
        capsys, "market1501", "--root", tmp_path / "R", "--archive", archive, "--msmt17-include-val"
    )
    assert_one_sentence_error(status, err, "--msmt17-include-val applies to msmt17 only")


def _bad_archive(tmp_path: Path, case: str) -> tuple[Path, list[str], str]:
    """Build the bad input for `case`: (archive path, extra CLI args, a fragment of the expected message)."""
    src = tmp_path / "src"
    fabricate.fabricate_market1501(src)
    if case == "dotdot":
        return fabricate.make_zip(src, tmp_path / "a.zip", extra={"../../x": b"owned"}), [], "unsafe member '../../x'"
    if case == "absolute":
        return fabricate.make_tar(src, tmp_path / "a.tar.gz", extra={"/tmp/x": b"owned"}), [], "an absolute path"
    if case == "symlink":
        archive = fabricate.make_tar(
            src,
            tmp_path / "a.tar",
            symlinks={"Market-1501-v15.09.15/l": "../../.."},
            extra={"Market-1501-v15.09.15/l/x": b"owned"},
        )
        return archive, [], "which leaves the folder"
    if case == "truncated":
        return fabricate.truncate(fabricate.make_tar(src, tmp_path / "a.tar.gz")), [], "truncated or corrupt"
    if case == "checksum":
        return fabricate.make_zip(src, tmp_path / "a.zip"), ["--sha256", "f" * 64], "not the expected " + "f" * 64
    if case == "missing":
        return tmp_path / "nowhere.zip", [], "official page"
    if case == "layout":
        fabricate.fabricate_dukemtmc(tmp_path / "duke")
        return fabricate.make_zip(tmp_path / "duke", tmp_path / "duke.zip"), [], "does not hold the market1501 layout"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "truncated", "checksum", "missing", "layout"])
def test_bad_archives_fail_cleanly(tmp_path, capsys, case):
    archive, extra, fragment = _bad_archive(tmp_path, case)
    root = tmp_path / "deep" / "R"
    old = root / "market1501" / "manifest.csv"
    old.parent.mkdir(parents=True)
    old.write_text("path,pid,camid,split\n")  # a stale manifest from an earlier run must not survive a failure
    before = {p for p in tmp_path.rglob("*") if root not in p.parents}
    status, _, err = prepare(capsys, "market1501", "--root", root, "--archive", archive, *extra)
    assert_one_sentence_error(status, err, fragment)
    assert {p for p in tmp_path.rglob("*") if root not in p.parents} == before  # nothing written outside R
    assert not old.exists()
    assert [p.name for p in (root / "market1501").iterdir()] == []


def test_unknown_dataset_is_one_sentence(tmp_path, capsys):
    status, _, err = prepare(capsys, "cuhk03", "--root", tmp_path, "--archive", tmp_path)
    assert_one_sentence_error(
        status, err, "unknown dataset 'cuhk03'; choose one of market1501, dukemtmc, msmt17, synthetic"
    )


def test_real_subprocess_prints_no_traceback(tmp_path):
    fabricate.fabricate_market1501(tmp_path / "src")
    archive = fabricate.make_zip(tmp_path / "src", tmp_path / "a.zip", extra={"../../x": b"owned"})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "havana",
            "prepare",
            "market1501",
            "--root",
            str(tmp_path / "R"),
            "--archive",
            str(archive),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("havana prepare: error: archive ")
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()
    assert not (tmp_path / "R" / "market1501" / "manifest.csv").exists()


def test_extracted_folder_inside_root_is_used_in_place_with_relative_or_absolute_paths(tmp_path, capsys, monkeypatch):
    fabricate.fabricate_market1501(tmp_path / "R" / "market1501" / "unpacked")
    monkeypatch.chdir(tmp_path)
    status, _, err = prepare(capsys, "market1501", "--root", tmp_path / "R", "--archive", "R/market1501/unpacked")
    assert status == 0, err
    expected = MARKET_MANIFEST.replace("Market-1501-v15.09.15/", "unpacked/Market-1501-v15.09.15/")
    assert (tmp_path / "R/market1501/manifest.csv").read_text() == expected
    assert sorted(p.name for p in (tmp_path / "R/market1501").iterdir()) == [
        "manifest.csv",
        "manifest.csv.provenance.yaml",
        "unpacked",
    ]

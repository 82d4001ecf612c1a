"""Safe acquisition: extraction of zip/tar/folder sources, refusal of unsafe members, checksum, download,
idempotency."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import fabricate
import pytest

from havana.data import acquire, datasets
from havana.errors import HavanaError


def files_outside(base: Path, inside: Path) -> set[str]:
    """Every path under `base` that is not under `inside`."""
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if inside not in (p, *p.parents)}


@pytest.fixture()
def market_source(tmp_path):
    """A fabricated Market-1501 folder under tmp/src/ and an empty resources root tmp/root/."""
    fabricate.fabricate_market1501(tmp_path / "src")
    return tmp_path / "src", tmp_path / "root"


@pytest.mark.parametrize("archive_name", ["m.zip", "m.tar", "m.tar.gz", "m.tgz", "folder"])
def test_every_source_kind_extracts_the_same_tree(market_source, tmp_path, archive_name):
    src, root = market_source
    if archive_name == "folder":
        source = src
    elif archive_name.endswith(".zip"):
        source = fabricate.make_zip(src, tmp_path / archive_name)
    else:
        source = fabricate.make_tar(src, tmp_path / archive_name)
    top = acquire.acquire(datasets.Market1501(), root, archive=source)
    assert top == root / "market1501" / fabricate.MARKET_TOP
    extracted = sorted(p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file())
    assert extracted == sorted(fabricate.MARKET_FILES)
    assert (top / fabricate.MARKET_FILES[0]).read_bytes() == (
        src / fabricate.MARKET_TOP / fabricate.MARKET_FILES[0]
    ).read_bytes()
    assert sorted(p.name for p in (root / "market1501").iterdir()) == sorted(
        [acquire.STAMP_NAME, acquire.TREE_NAME, fabricate.MARKET_TOP]
    )


def test_archive_without_wrapper_folder_is_placed_under_the_official_name(tmp_path):
    top = fabricate.fabricate_dukemtmc(tmp_path / "src")
    archive = fabricate.make_zip(top, tmp_path / "flat.zip")  # bounding_box_train/ etc. at the archive root
    placed = acquire.acquire(datasets.DukeMTMCReID(), tmp_path / "root", archive=archive)
    assert placed == tmp_path / "root" / "dukemtmc" / "DukeMTMC-reID"
    assert (placed / "query" / "0005_c1_f0000002.jpg").is_file()


def test_rerun_on_the_same_archive_skips_extraction(market_source, tmp_path):
    src, root = market_source
    archive = fabricate.make_zip(src, tmp_path / "m.zip")
    top = acquire.acquire(datasets.Market1501(), root, archive=archive)
    marker = top / "marker-left-by-first-run"
    marker.write_text("x")
    assert acquire.acquire(datasets.Market1501(), root, archive=archive) == top
    assert marker.exists()  # the folder was not re-extracted
    os.utime(archive, ns=(1, 1))  # a different archive (other mtime) is extracted afresh
    assert acquire.acquire(datasets.Market1501(), root, archive=archive) == top
    assert not marker.exists()


def test_folder_already_inside_the_dataset_dir_is_used_in_place(tmp_path):
    root = tmp_path / "root"
    top = fabricate.fabricate_market1501(root / "market1501")
    assert acquire.acquire(datasets.Market1501(), root, archive=root / "market1501") == top
    assert not (root / "market1501" / acquire.STAMP_NAME).exists()


@pytest.mark.parametrize(
    "kind,member,why",
    [
        ("zip", "../../x", "a path with '..'"),
        ("zip", "/tmp/abs-evil", "an absolute path"),
        ("tar", "Market-1501-v15.09.15/../../x", "a path with '..'"),
        ("tar", "/abs-evil", "an absolute path"),
    ],
)
def test_unsafe_member_paths_are_refused(market_source, tmp_path, kind, member, why):
    src, root = market_source
    make = fabricate.make_zip if kind == "zip" else fabricate.make_tar
    archive = make(src, tmp_path / f"evil.{'zip' if kind == 'zip' else 'tar.gz'}", extra={member: b"owned"})
    before = files_outside(tmp_path, root)
    with pytest.raises(HavanaError, match=f"unsafe member '{member}' \\({why}\\); nothing was extracted"):
        acquire.acquire(datasets.Market1501(), root, archive=archive)
    assert files_outside(tmp_path, root) == before
    assert list((root / "market1501").iterdir()) == []  # the temporary extraction folder is gone too


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_symlink_leaving_the_folder_is_refused_and_nothing_written_through_it(market_source, tmp_path, kind):
    src, root = market_source
    outside = tmp_path / "outside"
    outside.mkdir()
    link = f"{fabricate.MARKET_TOP}/evil"
    make = fabricate.make_zip if kind == "zip" else fabricate.make_tar
    archive = make(
        src, tmp_path / f"evil.{kind}", symlinks={link: "../../../outside"}, extra={f"{link}/pwned.txt": b"owned"}
    )
    with pytest.raises(HavanaError, match="a link to ../../../outside, which leaves the folder"):
        acquire.acquire(datasets.Market1501(), root, archive=archive)
    assert list(outside.iterdir()) == []
    assert list((root / "market1501").iterdir()) == []


def test_symlink_inside_and_hardlink_inside_are_extracted(market_source, tmp_path):
    src, root = market_source
    first = f"{fabricate.MARKET_TOP}/{fabricate.MARKET_FILES[0]}"
    archive = fabricate.make_tar(
        src,
        tmp_path / "ok.tar",
        symlinks={f"{fabricate.MARKET_TOP}/alias.jpg": fabricate.MARKET_FILES[0]},
        hardlinks={f"{fabricate.MARKET_TOP}/copy.jpg": first},
    )
    top = acquire.acquire(datasets.Market1501(), root, archive=archive)
    assert (top / "alias.jpg").is_symlink() and (top / "alias.jpg").read_bytes() == (
        top / fabricate.MARKET_FILES[0]
    ).read_bytes()
    assert (top / "copy.jpg").read_bytes() == (top / fabricate.MARKET_FILES[0]).read_bytes()


def test_hardlink_to_a_path_outside_is_refused(market_source, tmp_path):
    src, root = market_source
    archive = fabricate.make_tar(
        src, tmp_path / "evil.tar", hardlinks={f"{fabricate.MARKET_TOP}/h": "../../etc/passwd"}
    )
    with pytest.raises(HavanaError, match="unsafe member '../../etc/passwd' \\(a path with '..'\\)"):
        acquire.acquire(datasets.Market1501(), root, archive=archive)


@pytest.mark.parametrize("name", ["m.zip", "m.tar.gz", "m.tar"])
def test_truncated_archive_is_detected(market_source, tmp_path, name):
    src, root = market_source
    make = fabricate.make_zip if name.endswith(".zip") else fabricate.make_tar
    archive = fabricate.truncate(make(src, tmp_path / name))
    with pytest.raises(HavanaError, match="is truncated or corrupt .*; download it again and check its sha256"):
        acquire.acquire(datasets.Market1501(), root, archive=archive)
    assert list((root / "market1501").iterdir()) == []


def test_zip_crc_mismatch_is_detected(market_source, tmp_path):
    src, root = market_source
    archive = tmp_path / "m.zip"
    fabricate.make_zip(src, archive, extra={"payload.bin": b"A" * 1000})
    data = bytearray(archive.read_bytes())
    where = data.index(b"payload.bin") + len("payload.bin")  # stored entry: its bytes follow the local header name
    data[where + 5] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(HavanaError, match="truncated or corrupt"):
        acquire.acquire(datasets.Market1501(), root, archive=archive)


def test_checksum_verified_and_mismatch_refused(market_source, tmp_path):
    src, root = market_source
    archive = fabricate.make_zip(src, tmp_path / "m.zip")
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(HavanaError, match=f"sha256 of .*m.zip is {good}, not the expected {'0' * 64}"):
        acquire.acquire(datasets.Market1501(), root, archive=archive, sha256="0" * 64)
    assert not (root / "market1501").exists()
    with pytest.raises(HavanaError, match="is not a sha256 digest"):
        acquire.acquire(datasets.Market1501(), root, archive=archive, sha256="abc")
    assert acquire.acquire(datasets.Market1501(), root, archive=archive, sha256=good.upper()).is_dir()


def test_download_from_url_then_reuse(market_source, tmp_path):
    src, root = market_source
    archive = fabricate.make_tar(src, tmp_path / "Market-1501-v15.09.15.tar.gz")
    top = acquire.acquire(
        datasets.Market1501(), root, url=archive.as_uri(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest()
    )
    downloaded = root / "archives" / archive.name
    assert downloaded.read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in downloaded.parent.iterdir()) == [archive.name]  # no temporary file left
    assert (top / "query").is_dir()
    with pytest.raises(HavanaError, match="could not download .*missing.zip"):
        acquire.acquire(datasets.Market1501(), root, url=(tmp_path / "missing.zip").as_uri())
    assert sorted(p.name for p in downloaded.parent.iterdir()) == [archive.name]


def test_wrong_dataset_and_missing_archive_messages(market_source, tmp_path):
    src, root = market_source
    archive = fabricate.make_zip(src, tmp_path / "m.zip")
    with pytest.raises(HavanaError, match="does not hold the msmt17 layout \\(expected MSMT17_V1/"):
        acquire.acquire(datasets.MSMT17(), root, archive=archive)
    with pytest.raises(HavanaError, match="was withdrawn by its authors.*put it at .*archives/DukeMTMC-reID.zip"):
        acquire.acquire(datasets.DukeMTMCReID(), root, archive=tmp_path / "DukeMTMC-reID.zip")
    with pytest.raises(HavanaError, match="sign the authors' agreement"):
        acquire.acquire(datasets.MSMT17(), root, archive=tmp_path / "MSMT17_V1.tar.gz")


def test_plain_tar_cut_at_a_member_boundary_is_detected(market_source, tmp_path):
    src, root = market_source
    archive = fabricate.make_tar(src, tmp_path / "m.tar")
    with tarfile.open(archive) as whole:
        members = whole.getmembers()
    boundary = members[len(members) // 2].offset  # the header of a middle member: a clean cut
    archive.write_bytes(archive.read_bytes()[:boundary])
    with pytest.raises(HavanaError, match="truncated or corrupt \\(no end-of-archive marker\\)"):
        acquire.acquire(datasets.Market1501(), root, archive=archive)

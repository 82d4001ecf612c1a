"""Test helpers: fabricate tiny Market-1501, DukeMTMC-reID and MSMT17 folders in their real layouts, and archives of
them.

Every image is a real (tiny) JPEG whose colour depends on its pid, so the folders can also feed loaders and models.
The `*_FILES` constants list what each fabricated dataset holds; tests state their expected manifests explicitly.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

from PIL import Image

MARKET_TOP = "Market-1501-v15.09.15"
MARKET_FILES = (
    "bounding_box_train/0002_c1s1_000451_03.jpg",
    "bounding_box_train/0002_c2s1_000551_01.jpg",
    "bounding_box_train/0007_c3s3_077419_03.jpg",
    "bounding_box_train/0007_c6s4_002627_02.jpg",
    "bounding_box_train/Thumbs.db",
    "bounding_box_test/-1_c1s1_000401_03.jpg",  # junk: dropped
    "bounding_box_test/0000_c1s1_000001_01.jpg",  # distractor: kept
    "bounding_box_test/0003_c4s1_000001_01.jpg",
    "bounding_box_test/0003_c5s2_000002_01.jpg",
    "bounding_box_test/0005_c6s1_000003_01.jpg",
    "bounding_box_test/Thumbs.db",
    "query/0003_c1s1_000003_00.jpg",
    "query/0005_c2s1_000004_00.jpg",
    "gt_bbox/0003_c1s1_000003_00.jpg",  # hand-drawn boxes: ignored
    "gt_query/0003_c1s1_000003_00_good.mat",
    "readme.txt",
)

DUKE_TOP = "DukeMTMC-reID"
DUKE_FILES = (
    "bounding_box_train/0001_c2_f0046182.jpg",
    "bounding_box_train/0001_c8_f0000001.jpg",
    "bounding_box_train/0004_c5_f0001234.jpg",
    "bounding_box_test/0005_c3_f0000010.jpg",
    "bounding_box_test/0009_c7_f0000020.jpg",  # a gallery-only distractor id
    "query/0005_c1_f0000002.jpg",
    "CITATION.txt",
)

MSMT17_V1_TOP = "MSMT17_V1"
MSMT17_V2_TOP = "MSMT17_V2"
MSMT17_LISTS = {  # list file -> (image folder: "train" or "test", lines "relative/path pid")
    "list_train.txt": (
        "train",
        ("0000/0000_000_01_0303morning_0015_0.jpg 0", "0001/0001_001_15_0303noon_0020_1.jpg 1"),
    ),
    "list_val.txt": ("train", ("0002/0002_000_05_0303afternoon_0030_0.jpg 2",)),
    "list_query.txt": ("test", ("0000/0000_000_03_0303afternoon_0100_0.jpg 0",)),
    "list_gallery.txt": (
        "test",
        ("0000/0000_001_07_0113morning_0200_1.jpg 0", "0001/0001_000_12_0113noon_0300_0.jpg 1"),
    ),
}


def tiny_jpeg(pid: int, size: tuple[int, int] = (8, 16)) -> bytes:
    """A small real JPEG whose colour depends on `pid` (width, height = `size`)."""
    colour = ((pid * 67) % 256, (pid * 131) % 256, (pid * 29) % 256)
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write(top: Path, relative: str) -> None:
    path = top / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if relative.endswith(".jpg"):
        pid = int(Path(relative).name.split("_")[0])
        path.write_bytes(tiny_jpeg(abs(pid)))
    else:
        path.write_bytes(b"not an image\n")


def fabricate_market1501(base: Path, top: str = MARKET_TOP) -> Path:
    """Write `base/<top>/` with MARKET_FILES (junk, distractor, Thumbs.db, gt_bbox/ included) and return it."""
    for relative in MARKET_FILES:
        _write(base / top, relative)
    return base / top


def fabricate_dukemtmc(base: Path, top: str = DUKE_TOP) -> Path:
    """Write `base/<top>/` with DUKE_FILES (cameras up to 8) and return it."""
    for relative in DUKE_FILES:
        _write(base / top, relative)
    return base / top


def fabricate_msmt17(base: Path, version: str = "V1") -> Path:
    """Write `base/MSMT17_V1/` (train/, test/) or `base/MSMT17_V2/` (mask_train_v2/, mask_test_v2/) with list files."""
    top = base / (MSMT17_V1_TOP if version == "V1" else MSMT17_V2_TOP)
    folders = (
        {"train": "train", "test": "test"} if version == "V1" else {"train": "mask_train_v2", "test": "mask_test_v2"}
    )
    top.mkdir(parents=True, exist_ok=True)
    for list_name, (kind, lines) in MSMT17_LISTS.items():
        (top / list_name).write_text("".join(line + "\n" for line in lines))
        for line in lines:
            _write(top / folders[kind], line.split()[0])
    return top


def make_zip(
    folder: Path, archive: Path, *, extra: dict[str, bytes] | None = None, symlinks: dict[str, str] | None = None
) -> Path:
    """Zip everything under `folder` (names relative to it), then `extra` members (name -> bytes) and `symlinks`."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(folder.rglob("*")):
            out.write(path, path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            out.writestr(zipfile.ZipInfo(name), data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            out.writestr(info, target)
    return archive


def make_tar(
    folder: Path,
    archive: Path,
    *,
    extra: dict[str, bytes] | None = None,
    symlinks: dict[str, str] | None = None,
    hardlinks: dict[str, str] | None = None,
) -> Path:
    """Tar everything under `folder` (gzip when the name ends .gz/.tgz), then `symlinks`, `hardlinks` and `extra`."""
    mode = "w:gz" if archive.name.endswith((".gz", ".tgz")) else "w"
    with tarfile.open(archive, mode) as out:
        for path in sorted(folder.rglob("*")):
            out.add(path, path.relative_to(folder).as_posix(), recursive=False)
        for kind, links in ((tarfile.SYMTYPE, symlinks), (tarfile.LNKTYPE, hardlinks)):
            for name, target in (links or {}).items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, target
                out.addfile(info)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return archive


def truncate(archive: Path, keep: float = 0.6) -> Path:
    """Cut `archive` to the first `keep` fraction of its bytes, as an interrupted download would."""
    data = archive.read_bytes()
    archive.write_bytes(data[: int(len(data) * keep)])
    return archive


def link_ordering_trick(link: str, outside: str, depth: int = 30) -> dict[str, str]:
    """Symlink members (in order) after which member `link` resolves to `outside`, a path relative to the extraction
    folder such as '../../secret.jpg', although each link looks harmless when it is created.

    `link` points through `<top>/d0/…/d<depth-1>/hop` before `hop` exists, so it resolves lexically inside the folder;
    `hop` then points `depth` levels up, to `<top>` itself, so the physical path climbs `depth` levels higher than
    the lexical one did and leaves the folder.
    """
    top = link.split("/")[0]
    deep = "/".join(f"d{i}" for i in range(depth))
    to_top = "../" * (link.count("/") - 1)
    return {link: f"{to_top}{deep}/hop/../{outside}", f"{top}/{deep}/hop": "../" * depth}


class _Zeros(io.RawIOBase):
    """A stream of `size` zero bytes, without holding them in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def make_bomb(folder: Path, archive: Path, member: str, size: int) -> Path:
    """An archive of `folder` plus `member` holding `size` zero bytes (zip, else tar.gz): a tiny file that expands
    `size / archive size` times, as a zip bomb does."""
    zeros = bytes(1 << 20)
    if archive.name.endswith(".zip"):
        make_zip(folder, archive)
        info = zipfile.ZipInfo(member)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(archive, "a") as out, out.open(info, "w", force_zip64=True) as stream:
            for _ in range(size >> 20):
                stream.write(zeros)
        return archive
    with tarfile.open(archive, "w:gz") as out:
        for path in sorted(folder.rglob("*")):
            out.add(path, path.relative_to(folder).as_posix(), recursive=False)
        info = tarfile.TarInfo(member)
        info.size = size
        out.addfile(info, io.BufferedReader(_Zeros(size)))
    return archive

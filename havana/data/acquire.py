"""Getting a dataset onto disk: download or locate the archive, verify its sha256, extract it safely, find its top
folder.

Extraction goes into a temporary folder inside `ROOT/<ds>/` and the dataset's top folder is renamed into place only
when the whole archive has been read, so a crash or a bad archive leaves nothing half-extracted. Every member is
checked before it is written: absolute paths, `..`, names that are not UTF-8, links leaving the folder and special
files are refused, and nothing is ever written outside `ROOT`. After extraction every link is resolved again (a link
created before the link it passes through looked harmless when it was made). The bytes written are bounded by the
free space and by `MAX_RATIO` times the archive's size (a zip bomb stops with a sentence, not a full disk). A stamp
file records the source and the extracted tree, so a rerun on the same source skips the extraction unless the tree
was damaged since.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from havana.data.datasets import Dataset
from havana.errors import HavanaError
from havana.utils import atomic
from havana.utils.pathsafety import within
from havana.utils.progress import Progress, progress

STAMP_NAME = ".prepared.json"  # in ROOT/<ds>/: which source was extracted to which top folder
TREE_NAME = ".prepared.tree"  # in ROOT/<ds>/: every extracted entry with its size, checked before trusting the stamp
TEMP_PREFIX = ".extract-"  # temporary extraction folders in ROOT/<ds>/
ARCHIVES_DIR = "archives"  # ROOT/archives/ holds downloads and is the conventional place for archives
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CORRUPT_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, gzip.BadGzipFile, lzma.LZMAError)
CHUNK_BYTES = 1 << 20
MAX_RATIO = 100  # extracted bytes per archive byte; images barely compress (real re-ID archives: about 1)
MIN_ALLOWANCE_BYTES = 64 << 20  # small archives of text may expand more than MAX_RATIO up to this size


def acquire(
    dataset: Dataset,
    root: str | os.PathLike,
    *,
    archive: str | os.PathLike | None = None,
    url: str | None = None,
    sha256: str | None = None,
) -> Path:
    """Make `dataset` available under `ROOT/<ds>/` from an archive, a folder or a URL and return its top folder."""
    root = Path(root)
    dataset_dir = root / dataset.name
    expected = _normalise_sha256(sha256)
    source = resolve_source(dataset, root, archive=archive, url=url)
    if source.is_dir():
        if expected is not None:
            raise HavanaError(
                f"--sha256 checks an archive file, but {source} is a folder; drop --sha256 or pass the archive."
            )
        if within(source, dataset_dir):
            return locate_top(source, dataset)  # already extracted in place: nothing to copy
        if within(dataset_dir, source):
            raise HavanaError(
                f"folder {source} contains the output folder {dataset_dir}; pass the dataset's own folder."
            )
    elif within(source, dataset_dir):
        raise HavanaError(
            f"archive {source} lies inside {dataset_dir}, which prepare rebuilds and would delete it; "
            f"move it to {root / ARCHIVES_DIR}/ and pass that path."
        )
    signature = _signature(source)
    stamp = _read_stamp(dataset_dir)
    if (
        stamp is not None
        and stamp.get("source") == signature
        and (expected is None or stamp.get("sha256") == expected)
        and isinstance(stamp.get("top"), str)
        and (dataset_dir / stamp["top"]).is_dir()
    ):
        damaged = damaged_entry(dataset_dir, dataset_dir / stamp["top"])
        if damaged is None:
            return dataset_dir / stamp["top"]
        print(
            f"havana: {damaged} changed since it was extracted (missing or resized); extracting the archive again.",
            file=sys.stderr,
        )
    if expected is not None:
        verify_sha256(source, expected, downloaded=url is not None)
    return _extract_into(source, dataset_dir, dataset, signature, expected)


def resolve_source(dataset: Dataset, root: Path, *, archive: str | os.PathLike | None, url: str | None) -> Path:
    """The local archive or folder to prepare from: `archive` itself, or `url` downloaded to ROOT/archives/."""
    if (archive is None) == (url is None):
        raise HavanaError("pass exactly one of --archive PATH or --url URL.")
    if url is not None:
        return download(url, root / ARCHIVES_DIR)
    path = Path(archive)
    if not path.exists():
        conventional = root / ARCHIVES_DIR / dataset.archive_name
        raise HavanaError(
            f"archive {path} does not exist; {dataset.how_to_obtain}; put it at {conventional} "
            f"and pass --archive {conventional}."
        )
    return path


def download(url: str, directory: Path) -> Path:
    """Download `url` into `directory` (kept under its own file name; an existing file there is reused)."""
    try:
        name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    except ValueError as exc:
        raise HavanaError(f"URL {url} is not a valid URL ({exc}); pass the URL of the archive file itself.") from None
    if not name:
        raise HavanaError(f"URL {url} does not end in a file name; pass the URL of the archive file itself.")
    destination = directory / name
    if destination.is_file():
        return destination
    try:
        with urllib.request.urlopen(url) as response, atomic.atomic_path(destination) as tmp, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with Progress(f"download {name}", total, unit="B", unit_scale=True) as bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, ValueError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise HavanaError(
            f"could not download {url} ({reason}); check the URL and the network, "
            f"or download it yourself and pass --archive."
        ) from None
    return destination


def _normalise_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise HavanaError(f"--sha256 {sha256!r} is not a sha256 digest; pass the 64 hexadecimal digits.")
    return value


def verify_sha256(path: Path, expected: str, *, downloaded: bool = False) -> None:
    """Check the sha256 of `path` against `expected`; a mismatching download is removed so a rerun fetches it again."""
    digest = hashlib.sha256()
    with (
        open(path, "rb") as handle,
        Progress(f"sha256 {path.name}", path.stat().st_size, unit="B", unit_scale=True) as bar,
    ):
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    actual = digest.hexdigest()
    if actual != expected:
        if downloaded:
            path.unlink()
        advice = "the download was removed, so run the command again" if downloaded else "obtain the archive again"
        raise HavanaError(
            f"sha256 of {path} is {actual}, not the expected {expected}; the file is corrupt or a "
            f"different release, so {advice}."
        )


def _signature(source: Path) -> dict:
    """What identifies a source for the stamp: its path, size and modification time (every file's, for a folder)."""
    if source.is_file():
        info = source.stat()
        return {"path": str(source.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            info = os.lstat(os.path.join(folder, name))
            relative = os.fsencode(os.path.relpath(os.path.join(folder, name), source))
            digest.update(relative + f"\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return {"path": os.fsencode(source.resolve()).decode("utf-8", "backslashreplace"), "tree": digest.hexdigest()}


def _entry(path: str) -> str:
    """What the tree record keeps of one entry: `d` for a folder, `>target` for a link, else the size in bytes."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return ">" + os.readlink(path)
    return "d" if stat.S_ISDIR(info.st_mode) else str(info.st_size)


def write_tree_record(dataset_dir: Path, top: Path) -> None:
    """Record every entry under `top` (`kind<TAB>relative path` lines) for `damaged_entry` to check on a rerun."""
    lines = []
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            full = os.path.join(folder, name)
            lines.append(f"{_entry(full)}\t{os.path.relpath(full, top)}\n")
    atomic.write_text(dataset_dir / TREE_NAME, "".join(lines))


def damaged_entry(dataset_dir: Path, top: Path) -> Path | None:
    """The first entry recorded at extraction that is now missing or of another size or kind, else None."""
    try:
        record = (dataset_dir / TREE_NAME).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return dataset_dir / TREE_NAME
    for line in record:
        kind, _, relative = line.partition("\t")
        path = top / relative
        try:
            if _entry(str(path)) != kind:
                return path
        except OSError:
            return path
    return None


def _read_stamp(dataset_dir: Path) -> dict | None:
    try:
        return json.loads((dataset_dir / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _extract_into(source: Path, dataset_dir: Path, dataset: Dataset, signature: dict, sha256: str | None) -> Path:
    """Extract `source` into a temporary folder, locate the top folder, rename it to `dataset_dir/<top>`, stamp it."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    for stale in dataset_dir.glob(f"{TEMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a crashed run
    (dataset_dir / STAMP_NAME).unlink(missing_ok=True)
    (dataset_dir / TREE_NAME).unlink(missing_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=dataset_dir))
    try:
        extract(source, scratch)
        SafeTree(scratch, source).verify()
        top = locate_top(scratch, dataset, described=source)
        destination = dataset_dir / (dataset.top_folder if top == scratch else top.name)
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        elif destination.exists() or destination.is_symlink():
            destination.unlink()
        os.replace(top, destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_tree_record(dataset_dir, destination)
    atomic.write_json(dataset_dir / STAMP_NAME, {"source": signature, "sha256": sha256, "top": destination.name})
    return destination


def extract(source: Path, destination: Path) -> None:
    """Safely unpack a zip or tar archive, or copy a folder, into the existing empty folder `destination`."""
    writer = SafeTree(destination, source)
    try:
        if source.is_dir():
            _copy_folder(source, writer)
        elif source.name.lower().endswith(".zip"):
            _extract_zip(source, writer)
        elif source.name.lower().endswith(TAR_SUFFIXES):
            _extract_tar(source, writer)
        elif zipfile.is_zipfile(source):
            _extract_zip(source, writer)
        elif tarfile.is_tarfile(source):
            _extract_tar(source, writer)
        else:
            raise HavanaError(
                f"{source} is neither a .zip, .tar, .tar.gz/.tgz archive nor a folder; pass one of those."
            )
    except CORRUPT_ERRORS as exc:
        raise HavanaError(
            f"archive {source} is truncated or corrupt ({exc}); download it again and check its sha256."
        ) from None
    except OSError as exc:
        raise HavanaError(
            f"could not extract {source} into {destination.parent} ({exc.strerror or exc}); "
            "check free disk space and permissions."
        ) from None


class SafeTree:
    """Writes archive members under `root`, refusing any member that would land outside it."""

    def __init__(self, root: Path, source: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self.source = source
        self.written = 0  # bytes written so far
        self.allowance = _free_bytes(self.root)  # what may be written: free space, and MAX_RATIO x an archive's size
        self.ratio_limit = None if source.is_dir() else max(MIN_ALLOWANCE_BYTES, MAX_RATIO * source.stat().st_size)

    def refuse(self, name: str, why: str) -> HavanaError:
        shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
        return HavanaError(
            f"archive {self.source} holds an unsafe member '{shown}' ({why}); nothing was extracted, "
            "so obtain a clean copy of the archive."
        )

    def _inside(self, path: str | os.PathLike) -> bool:
        return within(path, self.root)

    def reserve(self, size: int) -> None:
        """Account for `size` more bytes written, refusing a zip bomb (MAX_RATIO) or more than the free space."""
        self.written += max(0, size)
        self.check(self.written)

    def check(self, total: int) -> None:
        """Refuse writing `total` bytes in all: over MAX_RATIO times the archive's size, or over the free space."""
        if self.ratio_limit is not None and total > self.ratio_limit:
            raise HavanaError(
                f"archive {self.source} expands to more than {_size(self.ratio_limit)}, over {MAX_RATIO} "
                f"times its own size of {_size(self.source.stat().st_size)}, which only a zip bomb does; "
                "nothing was extracted, so obtain a clean copy of the archive."
            )
        if total > self.allowance:
            raise HavanaError(
                f"extracting {self.source} needs more than the {_size(self.allowance)} free in "
                f"{self.root.parent}; nothing was extracted, so free some space or pass another --root."
            )

    def verify(self) -> None:
        """Resolve every link of the finished tree: the containment rule, checked once all links exist."""
        for folder, dirs, files in os.walk(self.root):
            for name in dirs + files:
                full = os.path.join(folder, name)
                if os.path.islink(full) and not self._inside(full):
                    relative = os.path.relpath(full, self.root)
                    raise self.refuse(relative, f"a link that resolves to {os.path.realpath(full)}, outside the folder")

    def target(self, name: str) -> Path:
        """The path under `root` for member `name`; refuses absolute paths, `..`, non-UTF-8 names and parents that
        resolve outside."""
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise self.refuse(name, "a name that is not UTF-8") from None
        if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
            raise self.refuse(name, "an absolute path")
        parts = [part for part in PurePosixPath(name.replace("\\", "/")).parts if part != "."]
        if ".." in parts:
            raise self.refuse(name, "a path with '..'")
        path = self.root.joinpath(*parts)
        if not self._inside(path.parent):
            raise self.refuse(name, "a path through a link leaving the folder")
        return path

    def directory(self, name: str) -> None:
        """Create the folder for member `name`."""
        path = self.target(name)
        path.mkdir(parents=True, exist_ok=True)
        if not self._inside(path):
            raise self.refuse(name, "a folder through a link leaving the folder")

    def file(self, name: str, stream: BinaryIO, size: int = 0) -> None:
        """Write member `name` (declared `size` bytes) from `stream`, never following an existing link at its path;
        the bytes are counted as they are written, so a member larger than declared is caught too."""
        path = self.target(name)
        self.reserve(size)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        copied = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
                before, copied = copied, copied + len(chunk)
                self.reserve(max(0, copied - size) - max(0, before - size))  # bytes beyond the declared size
                out.write(chunk)

    def symlink(self, name: str, link_target: str) -> None:
        """Create symlink `name` -> `link_target`, refusing targets that resolve outside `root`."""
        path = self.target(name)
        if link_target.startswith(("/", "\\")) or PureWindowsPath(link_target).drive:
            raise self.refuse(name, f"a link to the absolute path {link_target}")
        lexical = os.path.normpath(os.path.join(os.path.dirname(name.replace("\\", "/")), link_target))
        if lexical == ".." or lexical.startswith("../") or not self._inside(path.parent / link_target):
            raise self.refuse(name, f"a link to {link_target}, which leaves the folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        os.symlink(link_target, path)

    def hardlink(self, name: str, member: str) -> None:
        """Materialise hard link `name` as a copy of the already extracted member `member`."""
        original = self.target(member)
        if not original.is_file() or not self._inside(original):
            raise self.refuse(name, f"a hard link to {member}, which is not a file extracted inside the folder")
        path = self.target(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(original, "rb") as stream:
            self.file(name, stream, original.stat().st_size)


def _extract_zip(source: Path, writer: SafeTree) -> None:
    with zipfile.ZipFile(source) as archive:
        writer.check(sum(info.file_size for info in archive.infolist()))  # declared sizes bound what is read
        for info in progress(archive.infolist(), f"extract {source.name}", unit="file"):
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                writer.symlink(info.filename, archive.read(info).decode("utf-8"))
            elif info.is_dir():
                writer.directory(info.filename)
            else:
                with archive.open(info) as stream:  # raises BadZipFile on a CRC mismatch
                    writer.file(info.filename, stream, info.file_size)


def _extract_tar(source: Path, writer: SafeTree) -> None:
    with tarfile.open(source, "r:*") as archive, Progress(f"extract {source.name}", unit="file") as bar:
        for member in archive:  # streaming: members are checked and written one at a time
            if member.isdir():
                writer.directory(member.name)
            elif member.isreg():
                with archive.extractfile(member) as stream:
                    writer.file(member.name, stream, member.size)
            elif member.issym():
                writer.symlink(member.name, member.linkname)
            elif member.islnk():
                writer.hardlink(member.name, member.linkname)
            else:
                raise writer.refuse(member.name, "a device, fifo or other special file")
            bar.update()
        if not _is_compressed(source) and source.stat().st_size < archive.offset + 2 * tarfile.BLOCKSIZE:
            raise tarfile.ReadError("no end-of-archive marker")  # cut at a member boundary: no other sign of it


def _is_compressed(source: Path) -> bool:
    """Whether a tar file is gzip, bzip2 or xz compressed (those formats detect truncation themselves)."""
    with open(source, "rb") as handle:
        magic = handle.read(6)
    return magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))


def _copy_folder(source: Path, writer: SafeTree) -> None:
    """Copy an extracted folder with the same checks as an archive (its links must stay inside it)."""
    source_real = os.path.realpath(source)
    for folder, dirs, files in progress(os.walk(source), f"copy {source.name}", unit="folder"):
        dirs.sort()
        relative_folder = os.path.relpath(folder, source)
        for name in sorted(dirs) + sorted(files):
            full = os.path.join(folder, name)
            relative = os.path.normpath(os.path.join(relative_folder, name))
            if os.path.islink(full):
                real = os.path.realpath(full)
                if not (real == source_real or real.startswith(source_real + os.sep)):
                    raise writer.refuse(relative, f"a link to {os.readlink(full)}, which leaves the folder")
                writer.symlink(relative, os.readlink(full))
            elif os.path.isdir(full):
                writer.directory(relative)
            elif os.path.isfile(full):
                with open(full, "rb") as stream:
                    writer.file(relative, stream, os.path.getsize(full))


def locate_top(folder: Path, dataset: Dataset, *, described: Path | None = None) -> Path:
    """The dataset's top folder: `folder` itself or the first match breadth-first, at most four levels down."""
    level = [folder]
    for _ in range(5):
        for candidate in level:
            if dataset.is_top(candidate):
                return candidate
        level = [
            child
            for parent in level
            for child in sorted(parent.iterdir())
            if child.is_dir() and not child.is_symlink() and not child.name.startswith((".", "__MACOSX"))
        ]
    raise HavanaError(
        f"{described or folder} does not hold the {dataset.name} layout (expected {dataset.layout}); "
        "check that you passed the right archive for this dataset."
    )


def _free_bytes(folder: Path) -> int:
    """Bytes an unprivileged user may still write on `folder`'s file system."""
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize if info.f_blocks else 1 << 62  # no size reported (some FUSE mounts)


def _size(count: int) -> str:
    """A byte count for people: 2.0 GiB, 64.0 MiB, 512 B."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"

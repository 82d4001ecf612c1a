"""Atomic outputs: write under a temporary name in the destination folder, then rename, so a crash leaves no partial
file.

The output gets the mode the user's umask gives a new file (mkstemp alone makes it 0600, unreadable to colleagues on a
shared folder). A temporary is named `.<name>.<pid>@<host>.<random>.tmp`, so the next write of the same output removes
temporaries that a killed or crashed run left behind (its process is gone), and never one another process is writing.
An error while writing names the output: an OSError without a path gets the destination's, and a library error raised
because the disk filled up (torch, h5py) becomes OSError(ENOSPC) naming the destination.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from havana.errors import HavanaError

HOST = socket.gethostname().replace("/", "_")
OTHER_HOST_STALE_S = 24 * 3600  # a temporary from another host (shared file system) is stale after a day
LOW_SPACE_BYTES = 1 << 20  # below this much free space, a failed write is blamed on a full disk


def umask() -> int:
    """The process umask, read without changing it where /proc allows (changing it races with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary_pattern(name: str) -> re.Pattern:
    """Temporaries of output `name`: this module's `.<name>.<pid>@<host>.<8>.tmp` and the older `.<name>.<8>.tmp`."""
    return re.compile(rf"^\.{re.escape(name)}\.(?:(?P<pid>\d+)@(?P<host>.+)\.)?[a-z0-9_]{{8}}\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def sweep_stale(destination: str | os.PathLike) -> list[Path]:
    """Remove temporaries of `destination` left by runs that died (same host, process gone; another host: older
    than a day; the older naming without a process id: always); returns what was removed."""
    destination = Path(destination)
    pattern = _temporary_pattern(destination.name)
    removed = []
    try:
        entries = list(os.scandir(destination.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        if match["pid"] is not None:
            pid, host = int(match["pid"]), match["host"]
            if host == HOST and (pid == os.getpid() or _alive(pid)):
                continue
            if host != HOST and time.time() - entry.stat(follow_symlinks=False).st_mtime < OTHER_HOST_STALE_S:
                continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _free_bytes(folder: Path) -> int:
    try:
        info = os.statvfs(folder)
    except OSError:
        return LOW_SPACE_BYTES
    return info.f_bavail * info.f_frsize if info.f_blocks else 1 << 62  # no size reported (some FUSE mounts)


def _named(exc: BaseException, destination: Path, disk_full: bool) -> BaseException | None:
    """The error to raise instead of `exc` so it names `destination` (None: raise `exc` as it is)."""
    if isinstance(exc, OSError):
        if exc.errno is None and disk_full:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))
        if exc.errno is not None and (exc.filename is None or Path(os.fsdecode(exc.filename)).name.endswith(".tmp")):
            return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(destination))
        return None
    if isinstance(exc, Exception) and not isinstance(exc, HavanaError) and disk_full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(destination))  # torch: "file write failed"
    return None


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; on success rename it over `destination`, on error remove it."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(destination)
    prefix = f".{destination.name}.{os.getpid()}@{HOST}."
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=destination.parent))
        os.chmod(tmp, 0o777 & ~umask())
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=destination.parent)
        try:
            os.fchmod(fd, 0o666 & ~umask())
        finally:
            os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and destination.exists():
            shutil.rmtree(destination)
        os.replace(tmp, destination)
    except BaseException as exc:
        disk_full = _free_bytes(destination.parent) < LOW_SPACE_BYTES  # before the temporary frees its space
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        replacement = _named(exc, destination, disk_full)
        if replacement is not None:
            raise replacement from exc
        raise


def write_text(destination: str | os.PathLike, text: str) -> None:
    """Write `text` to `destination` atomically."""
    with atomic_path(destination) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(destination: str | os.PathLike, payload: Any) -> None:
    """Write `payload` as indented, key-sorted JSON atomically."""
    write_text(destination, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")

"""Atomic outputs: write under a temporary name in the destination folder, then rename, so a crash leaves no partial file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; on success rename it over `destination`, on error remove it."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{destination.name}."
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=destination.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=destination.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and destination.exists():
            shutil.rmtree(destination)
        os.replace(tmp, destination)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(destination: str | os.PathLike, text: str) -> None:
    """Write `text` to `destination` atomically."""
    with atomic_path(destination) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(destination: str | os.PathLike, payload: Any) -> None:
    """Write `payload` as indented, key-sorted JSON atomically."""
    write_text(destination, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")

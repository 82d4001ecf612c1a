"""Path safety rules shared by every command: containment (a path named by an archive or list file must resolve
inside its root) and input/output collision (no command may write over, or into a folder holding, its own input).

Both compare resolved paths (`os.path.realpath`), so `..`, symlinks and relative spellings cannot hide a path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from havana.errors import HavanaError
from havana.layout import TABLE_FORMATS


def within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path`, with every link and `..` resolved, is `folder` itself or lies inside it (also resolved)."""
    path_real, folder_real = os.path.realpath(path), os.path.realpath(folder)
    return path_real == folder_real or path_real.startswith(folder_real.rstrip(os.sep) + os.sep)


def outside_entries(root: str | os.PathLike, relatives: Iterable[str]) -> list[tuple[str, str]]:
    """(entry, resolved path) for every relative path under `root` that resolves outside it: the containment rule."""
    root = Path(root)
    return [(entry, os.path.realpath(root / entry)) for entry in relatives if not within(root / entry, root)]


def check_io(
    command: str,
    reads: Mapping[str, str | os.PathLike | None],
    writes: Mapping[str, tuple[str | os.PathLike | None, str]],
) -> None:
    """Refuse a command line that would write over its own input, or that names a file where a folder belongs.

    `reads` maps an option (e.g. `--features`) to the path it reads; `writes` maps an option to (path, kind), kind
    being "file" (the path and its `.provenance.yaml`), "folder" (the folder and everything inside it) or "prefix"
    (the path plus every extension of layout.TABLE_FORMATS); a list of paths is checked path by path. Missing options
    (None) are
    skipped.
    """
    for option, (many, kind) in writes.items():
        for path in many if isinstance(many, (list, tuple)) else [many]:  # an option may name several (train-head)
            _check_write(command, reads, option, path, kind)


def _check_write(
    command: str, reads: Mapping[str, str | os.PathLike | None], option: str, path: str | os.PathLike | None, kind: str
) -> None:
    if path is None:
        return
    path = Path(path)
    targets = {
        "file": [path, path.with_name(path.name + ".provenance.yaml")],
        "folder": [path],
        "prefix": [path.with_name(f"{path.name}.{ext}") for ext in TABLE_FORMATS],
    }[kind]
    if kind == "folder" and (path.is_file() or (path.is_symlink() and not path.exists())):
        raise HavanaError(
            f"{option} {path} is a file, but {command} writes a folder there; "
            "pass a folder path (it is created when missing)."
        )
    for target in targets if kind != "folder" else []:
        if target.is_dir():
            raise HavanaError(
                f"{option} {target} is a folder, but {command} writes a file there; "
                "pass a file path such as that folder's name plus a file name."
            )
    for read_option, read_path in reads.items():
        if read_path is None or not os.path.lexists(read_path):
            continue
        clash = (
            within(read_path, path)
            if kind == "folder"
            else any(os.path.realpath(read_path) == os.path.realpath(t) for t in targets)
        )
        if clash:
            where = "inside the folder" if kind == "folder" else "the same file as"
            raise HavanaError(
                f"{read_option} {read_path} is {where} {option} {path}, so {command} would "
                f"overwrite its own input; write the output somewhere else."
            )

"""Provenance: the git SHA, package version and resolved config written beside every output and into its MLflow run."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from havana import __version__
from havana.utils import atomic


def git_sha(cwd: str | os.PathLike | None = None) -> str:
    """The commit of the working tree (suffixed '-dirty' when tracked files differ), or 'unknown' outside git."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def to_plain(config: Any) -> Any:
    """Dataclasses, tuples and paths turned into plain YAML/JSON-able values."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {str(k): to_plain(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [to_plain(v) for v in config]
    if isinstance(config, os.PathLike):
        return os.fspath(config)
    return config


def config_hash(config: Any) -> str:
    """A stable sha256 of a config (key order does not matter)."""
    blob = json.dumps(to_plain(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record(config: Any) -> dict[str, Any]:
    """The provenance record of one job: resolved config, its hash, git SHA, package version, UTC time."""
    return {
        "config": to_plain(config),
        "config_hash": config_hash(config),
        "git_sha": git_sha(),
        "havana_version": __version__,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def write_beside(output: str | os.PathLike, config: Any) -> Path:
    """Write `<output>.provenance.yaml` (resolved config + git SHA) atomically and return its path."""
    output = Path(output)
    path = output.with_name(output.name + ".provenance.yaml")
    atomic.write_text(path, yaml.safe_dump(record(config), sort_keys=False))
    return path

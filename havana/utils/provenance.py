"""Provenance: the git SHA, package version, resolved config and the machine (library versions, device, CPU, threads,
determinism settings) written beside every output and into its MLflow run: two machines may give different numbers
from the same code (BLAS, CPU kernels, thread counts), and the record says which machine gave which."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
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


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else the platform's processor string, else 'unknown')."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What computed an output, beyond the code: Python, torch (CUDA, cuDNN, the device in use, threads, deterministic
    algorithms) when the job loaded torch, the installed torch version otherwise (a table job never imports it), the
    CPU model and its core count."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            info["torch"] = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            info["torch"] = None
        return info
    cuda = torch.cuda.is_available()
    info |= {
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    return info


def record(config: Any) -> dict[str, Any]:
    """The provenance record of one job: resolved config, its hash, git SHA, package version, machine, UTC time."""
    return {
        "config": to_plain(config),
        "config_hash": config_hash(config),
        "git_sha": git_sha(),
        "havana_version": __version__,
        "machine": machine(),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def beside(output: str | os.PathLike) -> Path:
    """The path of `output`'s provenance record: `<output>.provenance.yaml`."""
    output = Path(output)
    return output.with_name(output.name + ".provenance.yaml")


def write_beside(output: str | os.PathLike, config: Any) -> Path:
    """Write `<output>.provenance.yaml` (resolved config + git SHA) atomically and return its path."""
    return write_record_beside(output, record(config))


def write_record_beside(output: str | os.PathLike, built: dict[str, Any]) -> Path:
    """Write a record already built (`record`) as `<output>.provenance.yaml`, atomically; for an output that also
    embeds its record, so that both hold the same one."""
    path = beside(output)
    atomic.write_text(path, yaml.safe_dump(built, sort_keys=False))
    return path

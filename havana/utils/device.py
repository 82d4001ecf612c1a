"""Device selection: CPU, or one GPU claimed exclusively by this process through a lock file per device.

Snakemake only counts GPUs (`resources: gpu=1`, `--resources gpu=2`); it does not say which one a job gets. So each
job claims a free device itself: an exclusive `fcntl.flock` on `<lock dir>/gpu<id>.lock`, held for the life of the
process (the OS drops it on exit, crash included), and `CUDA_VISIBLE_DEVICES` narrowed to that device before CUDA
initialises. GPUs are counted without initialising CUDA (`CUDA_VISIBLE_DEVICES`, else `nvidia-smi -L`). Under SLURM
the allocation already is exclusive, so its devices are used as they are.

The lock folder and files are shared by every user of the machine: the folder is created sticky and world-writable
(like /tmp) and each lock file readable and writable by all, whatever the umask, so a colleague's job can take a GPU
that yours used before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from havana.errors import HavanaError

LOCK_DIR_ENV = "HAVANA_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/havana-gpu-locks"
WAIT_ENV = "HAVANA_GPU_WAIT_S"
DEFAULT_WAIT_S = float("inf")  # wait for a busy GPU as long as it takes (a queue); HAVANA_GPU_WAIT_S bounds it
_held: dict[str, int] = {}  # device id -> open lock fd, kept open until the process exits


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, found without initialising CUDA (so CUDA_VISIBLE_DEVICES can still change)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        if not ids or ids[0].startswith("-"):
            return []  # "" or "-1" hides every GPU
        return ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", listing, flags=re.MULTILINE)]


def _try_lock(lock_dir: Path, device_id: str) -> int | None:
    """An fd holding an exclusive lock on `device_id`'s lock file, or None when another process holds it."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device_id)
    path = lock_dir / f"gpu{safe}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY)  # another user's lock file from an older version (0644): flock still works
        except OSError as exc:
            raise HavanaError(
                f"GPU lock file {path} cannot be opened ({exc.strerror}); make {lock_dir} writable by "
                f"all (chmod 1777) or set {LOCK_DIR_ENV} to a folder you may write."
            ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if os.fstat(fd).st_uid == os.geteuid():
        os.fchmod(fd, 0o666)  # the next user may open it for writing, whatever our umask
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_folder(lock_dir: str | os.PathLike | None = None) -> Path:
    """The GPU lock folder (HAVANA_GPU_LOCK_DIR or /tmp/havana-gpu-locks), created sticky and writable by all."""
    path = Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)
    if not path.is_dir():
        try:
            path.mkdir(parents=True)
            os.chmod(path, 0o1777)
        except FileExistsError:
            if not path.is_dir():
                raise HavanaError(
                    f"GPU lock folder {path} is a file, not a folder; remove it or set {LOCK_DIR_ENV} to a folder."
                ) from None
        except OSError as exc:
            raise HavanaError(
                f"GPU lock folder {path} cannot be created ({exc.strerror}); set {LOCK_DIR_ENV} to a "
                "folder you may write."
            ) from None
    return path


def wait_seconds() -> float:
    """HAVANA_GPU_WAIT_S: how long to wait for a busy GPU, in seconds (unset: no limit)."""
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return DEFAULT_WAIT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise HavanaError(
            f"{WAIT_ENV}={text!r} is not a number of seconds (0 or more; 'inf' waits forever); fix or unset it."
        )
    return value


def claim_gpu(
    candidates: list[str], lock_dir: str | os.PathLike | None = None, wait_s: float | None = None, poll_s: float = 1.0
) -> str:
    """Claim the first free device among `candidates` and return its id; the lock lives until the process exits.

    When all are held (more GPU jobs than GPUs, e.g. no `--resources gpu=N`), waits up to `wait_s` seconds (env
    HAVANA_GPU_WAIT_S, default: no limit) for one to free up, then raises HavanaError. A device this process already
    holds is returned again.
    """
    for device_id in candidates:
        if device_id in _held:
            return device_id
    if not candidates:
        raise HavanaError("no GPU is visible to claim; run on CPU with --device cpu or expose a GPU.")
    wait_s = wait_seconds() if wait_s is None else wait_s
    lock_dir = lock_folder(lock_dir)
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        for device_id in candidates:
            fd = _try_lock(lock_dir, device_id)
            if fd is not None:
                _held[device_id] = fd
                return device_id
        if time.monotonic() >= deadline:
            raise HavanaError(
                f"all {len(candidates)} GPU(s) ({', '.join(candidates)}) are held by other jobs "
                f"(locks in {lock_dir}); run with --resources gpu=N no larger than the GPU count."
            )
        if not announced:
            print(
                f"havana: all {len(candidates)} GPU(s) are held by other jobs; waiting for one to free up "
                f"(pass --resources gpu=N to Snakemake to avoid this).",
                file=sys.stderr,
                flush=True,
            )
            announced = True
        time.sleep(poll_s)


def select_device(requested: str = "auto"):
    """`auto` (a claimed GPU when one is visible, else CPU), `cpu`, `cuda` (a claimed GPU) or `cuda:N` (that GPU)."""
    import torch

    requested = requested.strip().lower()
    if requested == "cpu":
        return torch.device("cpu")
    if requested not in ("auto", "cuda") and not re.fullmatch(r"cuda:\d+", requested):
        raise HavanaError(f"unknown device '{requested}'; use auto, cpu, cuda or cuda:N.")
    if re.fullmatch(r"cuda:\d+", requested):
        if not torch.cuda.is_available():
            raise HavanaError(f"device {requested} was asked for but CUDA is not available; use auto or cpu.")
        return torch.device(requested)
    candidates = visible_gpus()
    if not candidates:
        if requested == "cuda":
            raise HavanaError("device cuda was asked for but no GPU is visible; use auto or cpu.")
        return torch.device("cpu")
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        chosen_index = 0  # SLURM already gave this job its own GPU(s)
    else:
        chosen = claim_gpu(candidates)
        chosen_index = candidates.index(chosen)
        if not torch.cuda.is_initialized():
            os.environ["CUDA_VISIBLE_DEVICES"] = chosen
            chosen_index = 0
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise HavanaError(
                "device cuda was asked for but torch cannot use the GPU (CPU-only build or driver); use cpu."
            )
        return torch.device("cpu")
    return torch.device(f"cuda:{chosen_index}")

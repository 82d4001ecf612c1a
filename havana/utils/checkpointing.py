"""Training checkpoints by wall-clock interval and on SIGTERM, shared by the head and extractor engines.

A paper-size head's checkpoint (weights + Adam moments) is three times its head.pt; written every epoch it dominated
the run's disk traffic. So an engine asks `due()` after every optimiser step and writes a checkpoint only when
`checkpoint_minutes` have passed since the last one (0: at the end of every epoch, the old behaviour) or when the job
received SIGTERM (SLURM preemption and `scancel` send it, then SIGKILL after a grace period). On SIGTERM the current
step finishes, the checkpoint is written and the job stops with `Preempted` (one sentence, non-zero exit); rerunning
the same command resumes bit-identically, mid-epoch included. Once the final outputs exist the engine calls
`remove()`: a finished job keeps no checkpoint.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from havana.errors import HavanaError
from havana.utils import atomic, torch_io

CHECKPOINT = "checkpoint.pt"


class Preempted(HavanaError):
    """The job received SIGTERM and stopped after writing its checkpoint; rerunning it resumes."""


def rng_states(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG state a training step draws from: python, numpy, torch CPU and CUDA, plus named generators."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }


def restore_rng_states(states: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Put back the states saved by `rng_states` (into the same named generators)."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for name, generator in (generators or {}).items():
        generator.set_state(states["generators"][name])


def ignore_sigterm() -> None:
    """For DataLoader worker processes: leave SIGTERM to the training process, which finishes its step, checkpoints
    and shuts its workers down (a worker killed by it would abort the step instead)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Checkpointer:
    """When to write `path`, and the writing, loading and removal of it; a context manager that turns SIGTERM into a
    stop request for the duration of the training loop (main thread only; the previous handler is restored)."""

    def __init__(self, path: str | os.PathLike, minutes: float) -> None:
        if minutes < 0:
            raise HavanaError(f"checkpoint_minutes must be 0 (every epoch) or positive, got {minutes}.")
        self.path = Path(path)
        self.interval_s = 60.0 * minutes
        self.stop_requested = False
        self.writes = 0  # checkpoints written by this process
        self.bytes_written = 0  # their total size
        self._last = time.monotonic()
        self._previous: Any = None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True

    def __enter__(self) -> Checkpointer:
        self._last = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def due(self, epoch_end: bool) -> bool:
        """Write a checkpoint now? After SIGTERM always; with interval 0 at each epoch end; else once it elapsed."""
        if self.stop_requested:
            return True
        if self.interval_s == 0:
            return epoch_end
        return time.monotonic() - self._last >= self.interval_s

    def load(self, map_location: torch.device | str, advice: str) -> dict[str, Any] | None:
        """The saved state, None when there is no checkpoint, HavanaError (ending with `advice`) when it is damaged."""
        if not self.path.is_file():
            return None
        return torch_io.load(
            self.path, what="training checkpoint", advice=advice, map_location=map_location, weights_only=False
        )

    def save(self, state: dict[str, Any], where: str) -> None:
        """Write `state` atomically; after SIGTERM, then stop with Preempted naming `where` ("epoch 3, step 40")."""
        with atomic.atomic_path(self.path) as tmp:
            torch_io.save(state, tmp)
            size = tmp.stat().st_size
        self.writes += 1
        self.bytes_written += size
        self._last = time.monotonic()
        if self.stop_requested:
            raise Preempted(
                f"stopped by SIGTERM after {where}; the state is saved in {self.path}, so rerunning the "
                "same command resumes from there with the same result."
            )

    def remove(self) -> None:
        """Delete the checkpoint: the job's final outputs exist."""
        self.path.unlink(missing_ok=True)


def checkpoints_written(job_seconds: float, minutes: float, epochs: int) -> int:
    """How many checkpoints an uninterrupted job of `job_seconds` writes (each preemption adds one): one per elapsed
    interval, so none in a job shorter than it; with interval 0, one per epoch but the last. `havana plan` multiplies
    it by the checkpoint's size (weights + Adam's two moments) for the bytes written; none is kept."""
    if minutes == 0:
        return max(0, epochs - 1)
    return int(job_seconds // (60.0 * minutes))

"""Torch files (models, heads, training checkpoints): saved with bytes that depend only on their content, and loaded
with one sentence for a missing, truncated or foreign file, instead of whichever of EOFError, RuntimeError,
OSError(EINVAL) or UnpicklingError torch raises for it."""

from __future__ import annotations

import errno
import os
import pickle
from typing import Any

import torch

from havana.errors import HavanaError

# what torch raises for a file that is cut short or is not a torch file at all
DAMAGED = (EOFError, RuntimeError, OSError, pickle.UnpicklingError, ValueError, KeyError, TypeError, AttributeError)


def save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj)` to `path` through an open file: torch names the zip's records after the file it is given a
    path to, so saving to an atomic write's temporary name would put that name into the bytes, and equal weights would
    get different sha256 in provenance. Through a file handle the records are always named "archive"."""
    with open(path, "wb") as handle:
        torch.save(obj, handle)


def load(
    path: str | os.PathLike, *, what: str, advice: str, map_location: Any = "cpu", weights_only: bool = True
) -> Any:
    """`torch.load(path)`, or HavanaError "<what> <path> does not exist / is damaged ...; <advice>." (an OSError
    other than a damaged file's EINVAL, e.g. permission denied, is raised as it is for the CLI to describe)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except FileNotFoundError:
        raise HavanaError(f"{what} {path} does not exist; {advice}.") from None
    except DAMAGED as exc:
        if isinstance(exc, OSError) and exc.errno not in (None, errno.EINVAL):
            raise
        raise HavanaError(f"{what} {path} is truncated or not a torch file ({type(exc).__name__}); {advice}.") from None

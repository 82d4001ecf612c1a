"""The one exception type meant for users, and the one sentence an operating-system error becomes."""

from __future__ import annotations

import errno
import os


class HavanaError(Exception):
    """A user mistake or a missing input; the CLI prints the message alone, without a traceback, and exits 2."""


_ADVICE = {
    errno.ENOSPC: "free some disk space, then rerun the same command",
    errno.EDQUOT: "free some space under your disk quota, then rerun the same command",
    errno.EFBIG: "the file outgrew the file-size limit (ulimit -f); raise it or write elsewhere",
    errno.EACCES: "check that you may read or write there, or choose a path you own",
    errno.EPERM: "check that you may read or write there, or choose a path you own",
    errno.EROFS: "that file system is read-only; write to a writable folder instead",
    errno.EISDIR: "that is a folder; pass a file path",
    errno.ENOTDIR: "part of that path is a file, not a folder; fix the path",
    errno.ENOENT: "it does not exist; check the path",
    errno.EEXIST: "something is already there; move it away or choose another path",
    errno.EIO: "the disk reported an input/output error; check the device",
    errno.EMFILE: "too many files are open; raise the limit (ulimit -n)",
    errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter path",
}


def describe_os_error(exc: OSError) -> str:
    """One sentence for an OSError: the path, what the system said and what to do (ENOSPC, EACCES, EROFS, ...)."""
    paths = [os.fsdecode(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(paths) if paths else "a file this command reads or writes"
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = f" ({errno.errorcode[exc.errno]})" if exc.errno in errno.errorcode else ""
    advice = _ADVICE.get(exc.errno, "check the path, its permissions and the free disk space")
    return f"{where}: {reason.rstrip('.')}{code}; {advice}."

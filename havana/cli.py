"""`havana` command line: one subcommand per pipeline stage; each calls the library and never reads Snakemake's config.

Every subcommand lives in `havana/commands/<name>.py` and exposes `register(subparsers)`, which adds its parser and
sets `func(args) -> int` and, for a command that writes files, `io(args) -> (reads, writes)` declared next to its
arguments. Before a command runs, its inputs and outputs are checked against each other (no command writes over its
own input). A HavanaError becomes one sentence on stderr and exit status 2, an OSError (disk full,
permission denied, read-only file system ...) one sentence naming the path and exit status 1; `--debug` (or
HAVANA_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from havana import __version__
from havana.errors import HavanaError, describe_os_error
from havana.utils import pathsafety

COMMAND_MODULES = (
    "prepare",
    "synth",
    "train_extractor",
    "import_extractor",
    "export_extractor",
    "extract",
    "import_features",
    "export_features",
    "train_head",
    "evaluate",
    "table",
    "summary",
    "figure",
    "runs",
    "ui",
    "plan",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="havana", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"havana {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get("HAVANA_DEBUG", "") not in ("", "0"),
        help="show the full traceback of an error (also HAVANA_DEBUG=1)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"havana.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, run the subcommand, and turn user errors into a one-line message and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "io"):
            pathsafety.check_io(args.command, *args.io(args))
        return int(args.func(args) or 0)
    except HavanaError as exc:
        if args.debug:
            raise
        print(f"havana {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if args.debug:
            raise
        print(f"havana {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"havana {args.command}: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

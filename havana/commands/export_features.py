"""`havana export-features`: a havana feature file as the `.npz` layout `havana import-features` reads."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export-features` subcommand."""
    parser = subparsers.add_parser(
        "export-features",
        help="write a havana feature file as .npz ({train,query,gallery}_{features,pids,camids,paths})",
        description="Write FEATURES (havana's HDF5 feature file) to OUT in the .npz layout of `havana "
        "import-features`: every view, pids, camids and image paths per split.",
    )
    parser.add_argument("--features", required=True, help="a feature file written by `havana extract`")
    parser.add_argument("--out", required=True, help="output .npz, e.g. results/<ds>/exports/<NAME>.npz")
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {"--features": args.features}, {"--out": (args.out, "file")}


def run(args: argparse.Namespace) -> int:
    """Export and print a one-line summary."""
    from havana.data.feature_import import export_npz

    print(f"havana export-features: {args.features} -> {export_npz(args.features, args.out)}")
    return 0

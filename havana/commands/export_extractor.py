"""`havana export-extractor`: a havana BoT model.pt as BoT saves its state dict, for BoT's own code (and for the demo,
which imports it back with `havana import-extractor`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export-extractor` subcommand."""
    parser = subparsers.add_parser(
        "export-extractor",
        help="write a BoT-built model.pt as BoT's state dict (base.*, bottleneck.*, classifier.weight)",
        description="Write MODEL (a havana model.pt built as BoT's: no stem ReLU) to OUT as reid-strong-baseline "
        "saves a state dict, so that BoT's Baseline.load_param or `havana import-extractor --format bot` reads it.",
    )
    parser.add_argument("--model", required=True, help="a model.pt written by `havana train-extractor`")
    parser.add_argument("--format", required=True, choices=("bot",), help="the layout to write (BoT's)")
    parser.add_argument("--out", required=True, help="output checkpoint, e.g. results/<ds>/exports/<NAME>.bot.pth")
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {"--model": args.model}, {"--out": (args.out, "file")}


def run(args: argparse.Namespace) -> int:
    """Export and print a one-line summary."""
    from havana.models.importing import export_bot  # torch: imported to run, not to print help

    tensors = export_bot(args.model, args.out)
    print(f"havana export-extractor: {args.model} -> {args.out} ({tensors} tensors in BoT's layout)")
    return 0

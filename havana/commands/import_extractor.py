"""`havana import-extractor`: a BoT, fast-reid or torchreid checkpoint as a havana model.pt, instead of training."""

from __future__ import annotations

import argparse

from havana.models.extractor_config import IMPORT_FORMATS  # no torch: help stays light


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `import-extractor` subcommand."""
    parser = subparsers.add_parser(
        "import-extractor",
        help="convert a trained BoT / fast-reid / torchreid checkpoint into a havana model.pt",
        description="Read CHECKPOINT as FORMAT saves it (BoT: a bare state dict; fast-reid: {'model': ...}; "
        "torchreid: {'state_dict': ...}, 'module.' prefixes allowed) and write OUT, a havana model.pt whose test "
        "feature is that framework's (BoT: after BNNeck, no stem ReLU; fast-reid: after BNNeck, ceil-mode stem "
        "pool; torchreid: the pooled feature). Only tensors are read: a pickled whole model is refused.",
    )
    parser.add_argument(
        "--format", required=True, choices=IMPORT_FORMATS, help="the framework that saved the checkpoint"
    )
    parser.add_argument("--checkpoint", required=True, help="the checkpoint file")
    parser.add_argument("--arch", required=True, help="resnet18, resnet34, resnet50, resnet101 or resnet152")
    parser.add_argument("--out", required=True, help="output model.pt, e.g. results/<ds>/extractors/<NAME>/model.pt")
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"), help="input size (default 256 128)"
    )
    parser.add_argument("--last-stride", type=int, choices=(1, 2), help="layer4 stride (default: the format's)")
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {"--checkpoint": args.checkpoint}, {"--out": (args.out, "file")}


def run(args: argparse.Namespace) -> int:
    """Convert, write model.pt atomically with its provenance, and print a one-line summary."""
    from havana.models.importing import import_extractor  # torch: imported to run, not to print help

    config = import_extractor(
        args.checkpoint, args.format, args.arch, args.out, tuple(args.image_size), last_stride=args.last_stride
    )
    print(
        f"havana import-extractor: {args.format} {args.arch} -> {args.out} (stem ReLU {config.stem_relu}, "
        f"stem pool {config.stem_pool}, last stride {config.last_stride}, {config.transforms.interpolation} resize)"
    )
    return 0

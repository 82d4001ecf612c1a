"""`havana synth --out DIR`: render the synthetic re-ID dataset in the Market-1501 layout (then `havana prepare
synthetic`)."""

from __future__ import annotations

import argparse
import dataclasses

from havana.data import synthetic

_HELP = {
    "ids": "identities in total; half train, half test",
    "cameras": "number of cameras, 2..9",
    "images_per_id": "images per identity (at least 2)",
    "height": "image height in pixels",
    "width": "image width in pixels",
    "difficulty": "0 (clean, distinctive) .. 1 (strong nuisances, small colour palette)",
    "distractors": "distractor images (pid 0) as a fraction of the test images",
    "junk": "junk crops (pid -1) as a fraction of the test images",
    "seed": "random seed; the same seed gives byte-identical files",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synth` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="render a synthetic pedestrian re-ID dataset in the Market-1501 layout",
        description="Render OUT/Synthetic-ReID/{bounding_box_train,bounding_box_test,query}/ with Market-1501 file "
        "names plus synthetic.json (parameters and statistics), atomically. Then run "
        "`havana prepare synthetic --root ROOT --archive OUT` to extract it and write its manifest.",
    )
    parser.add_argument("--out", required=True, help="folder to write Synthetic-ReID/ into")
    for field in dataclasses.fields(synthetic.SynthConfig):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=type(field.default),
            default=field.default,
            help=f"{_HELP[field.name]} (default {field.default})",
        )
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {}, {"--out": (args.out, "folder")}


def run(args: argparse.Namespace) -> int:
    """Render the dataset and print where it went and how large it is."""
    config = synthetic.SynthConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(synthetic.SynthConfig)})
    top = synthetic.synthesize(config, args.out)
    counts = synthetic.statistics(synthetic.plan(config))
    summary = ", ".join(f"{split} {ids} ids / {images} images" for split, (ids, images) in counts.items())
    print(f"havana synth: wrote {top} ({summary}; difficulty {config.difficulty}, seed {config.seed})")
    return 0

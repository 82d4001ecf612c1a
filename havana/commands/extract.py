"""`havana extract`: features of every manifest image from a trained extractor into one HDF5 file."""

from __future__ import annotations

import argparse

from havana.errors import HavanaError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `extract` subcommand."""
    parser = subparsers.add_parser(
        "extract",
        help="extract train (V views), query and gallery (plain + flipped) features to HDF5",
        description="Run MODEL over MANIFEST and write OUT.h5 (groups train/query/gallery, complete=1 written last, "
        "renamed into place only when complete). Extraction settings come from the config's "
        "extractors.<NAME>.extraction when given, else from those saved with the model.",
    )
    parser.add_argument("--manifest", required=True, help="resources/<ds>/manifest.csv")
    parser.add_argument("--model", required=True, help="a model.pt written by `havana train-extractor`")
    parser.add_argument("--out", required=True, help="output file, e.g. results/<ds>/features/<NAME>.h5")
    parser.add_argument("--config", help="YAML config holding extractors.<NAME>.extraction (needs --extractor)")
    parser.add_argument("--extractor", help="the extractors.<NAME> entry; also the file's 'extractor' attribute")
    parser.add_argument("--dataset", help="the file's 'dataset' attribute (default: the manifest's folder name)")
    parser.add_argument("--views", type=int, help="override extraction.views (train views per image)")
    parser.add_argument("--batch-size", type=int, help="override extraction.batch_size")
    parser.add_argument("--device", help="override extraction.device: auto, cpu, cuda or cuda:N")
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {"--manifest": args.manifest, "--model": args.model, "--config": args.config}, {"--out": (args.out, "file")}


def run(args: argparse.Namespace) -> int:
    """Resolve the extraction settings, extract, and print a one-line summary."""
    from havana.config import load_yaml
    from havana.engine.extraction import extract_features  # torch: imported to run, not to print help
    from havana.models.extractor_config import extractor_config

    extraction = None
    if args.config:
        if not args.extractor:
            raise HavanaError("--config needs --extractor NAME to pick extractors.<NAME>.extraction.")
        extraction = extractor_config(load_yaml(args.config), args.extractor).extraction
    overrides = {
        k: v
        for k, v in (("views", args.views), ("batch_size", args.batch_size), ("device", args.device))
        if v is not None
    }
    if overrides.get("views", 1) < 1 or overrides.get("batch_size", 1) < 1:
        raise HavanaError("--views and --batch-size must be at least 1.")
    summary = extract_features(
        args.manifest,
        args.model,
        args.out,
        extraction=extraction,
        overrides=overrides,
        dataset=args.dataset,
        extractor=args.extractor,
    )
    counts = ", ".join(f"{split} {n}" for split, n in summary.rows.items())
    print(f"havana extract: wrote {summary.path} ({counts} images; {summary.views} train view(s), {summary.dim}-d)")
    return 0

"""`havana import-features`: features computed elsewhere (.h5 in havana's schema, or .npz) as a havana feature file."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `import-features` subcommand."""
    parser = subparsers.add_parser(
        "import-features",
        help="check and convert a feature file (.h5 or .npz) into havana's HDF5 feature file",
        description="Check SOURCE (shapes, dtypes, NaNs; with --manifest: each split's images, pids and camids) and "
        "write OUT in havana's schema (complete=1 written last). The .npz layout: {train,query,gallery}_features "
        "([N, D] or [N, V, D]; query/gallery V = 1 or 2: plain, flipped), _pids, _camids and optional _paths. Each "
        "problem found is one sentence on its own line.",
    )
    parser.add_argument("--source", required=True, help="the feature file to import (.h5/.hdf5 or .npz)")
    parser.add_argument("--out", required=True, help="output file, e.g. results/<ds>/features/<NAME>.h5")
    parser.add_argument("--manifest", help="resources/<ds>/manifest.csv: check the splits' images against it")
    parser.add_argument("--dataset", help="the file's 'dataset' attribute (default: the manifest's folder name)")
    parser.add_argument("--extractor", help="the file's 'extractor' attribute (default: the source's name)")
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {"--source": args.source, "--manifest": args.manifest}, {"--out": (args.out, "file")}


def run(args: argparse.Namespace) -> int:
    """Check and convert, then print a one-line summary (and say when heads will see no augmentation)."""
    from havana.data.feature_import import import_features
    from havana.data.features import read_attrs

    out = import_features(args.source, args.out, args.manifest, dataset=args.dataset, extractor=args.extractor)
    views = read_attrs(out)["views"]
    print(f"havana import-features: {args.source} -> {out} ({views} train view(s))")
    if views == 1:
        print(
            "havana import-features: note: the train features have one view, so a head trained on them sees no "
            "augmentation (havana extract stores V views drawn with the extractor's training transforms)."
        )
    return 0

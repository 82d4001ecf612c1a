"""`havana prepare DATASET --root DIR (--archive PATH | --url URL)`: extract a dataset safely and write its manifest."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from havana.data import datasets
from havana.errors import HavanaError
from havana.layout import Layout
from havana.utils import pathsafety, provenance


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `prepare` subcommand."""
    parser = subparsers.add_parser(
        "prepare",
        help="extract a dataset archive safely and write DIR/DATASET/manifest.csv",
        description="Verify (--sha256), safely extract and parse a re-ID dataset into ROOT/DATASET/, then write "
        "ROOT/DATASET/manifest.csv (path,pid,camid,split) last and atomically. Accepts .zip, .tar, "
        ".tar.gz/.tgz or an extracted folder; a rerun on the same source skips the extraction. "
        "Archives conventionally live in ROOT/archives/.",
    )
    parser.add_argument("dataset", metavar="DATASET", help=f"one of: {', '.join(datasets.DATASETS)}")
    parser.add_argument("--root", required=True, type=Path, help="resources folder; the dataset goes to ROOT/DATASET/")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--archive", type=Path, help="a .zip, .tar, .tar.gz/.tgz archive or an extracted folder")
    source.add_argument("--url", help="download the archive from this URL into ROOT/archives/ first")
    parser.add_argument("--sha256", help="expected sha256 of the archive (64 hex digits); checked before extraction")
    parser.add_argument(
        "--msmt17-include-val",
        action="store_true",
        help="MSMT17 only: add list_val.txt to the train split (the paper's Table 1 does not)",
    )
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    manifest = Path(Layout(resources=str(args.root)).manifest(args.dataset))
    return {"--archive": args.archive}, {"--root": (manifest, "file")}


def run(args: argparse.Namespace) -> int:
    """Acquire the dataset, parse it, print its statistics next to the official ones, and write the manifest."""
    from havana.data import acquire

    dataset_class = datasets.get_dataset(args.dataset)
    if args.msmt17_include_val and dataset_class is not datasets.MSMT17:
        raise HavanaError(f"--msmt17-include-val applies to msmt17 only, not {args.dataset}; drop it.")
    dataset = (
        datasets.MSMT17(include_val=args.msmt17_include_val) if dataset_class is datasets.MSMT17 else dataset_class()
    )
    manifest_path = Path(Layout(resources=str(args.root)).manifest(dataset.name))
    dataset_dir = manifest_path.parent  # manifest paths are relative to its folder
    manifest_path.unlink(missing_ok=True)  # a failed run must not leave an older manifest looking current

    top = acquire.acquire(dataset, args.root, archive=args.archive, url=args.url, sha256=args.sha256)
    manifest = dataset.parse(top)
    prefix = Path(os.path.relpath(os.path.realpath(top), os.path.realpath(dataset_dir))).as_posix()
    if prefix != ".":  # manifest paths are relative to ROOT/DATASET/
        manifest["path"] = prefix + "/" + manifest["path"]
    found = datasets.split_statistics(manifest)
    empty = [split for split, (_, images) in found.items() if images == 0]
    if empty:
        raise HavanaError(
            f"{top} has no {' or '.join(empty)} images; check that the archive is a complete {dataset.name} release."
        )
    expected = dataset.expected_statistics(top)
    print(format_statistics(found, expected))
    if expected is not None and found != expected:
        print(
            f"havana prepare: warning: {dataset.name} differs from its official statistics "
            "(fine for a subset, otherwise check the archive).",
            file=sys.stderr,
        )

    outside = pathsafety.outside_entries(dataset_dir, manifest["path"])
    if outside:
        entry, resolved = outside[0]
        raise HavanaError(
            f"{dataset.name} image {entry} resolves to {resolved}, outside {dataset_dir} "
            f"({len(outside)} such image(s)); no manifest was written, so use a clean copy of the dataset."
        )
    provenance.write_beside(
        manifest_path,
        {
            "dataset": dataset.name,
            "root": args.root,
            "archive": args.archive,
            "url": args.url,
            "sha256": args.sha256,
            "top": top.name,
            "msmt17_include_val": args.msmt17_include_val,
        },
    )
    datasets.write_manifest(manifest_path, manifest)
    print(f"prepared {dataset.name}: {len(manifest)} images, {manifest['pid'].nunique()} ids -> {manifest_path}")
    return 0


def format_statistics(found: datasets.Statistics, expected: datasets.Statistics | None) -> str:
    """A plain-text table of ids and images per split, beside the expected (official) numbers."""
    lines = [f"{'split':<8} {'ids':>7} {'official':>8} {'images':>8} {'official':>8}"]
    for split in datasets.SPLITS:
        ids, images = found[split]
        ref_ids, ref_images = expected[split] if expected is not None else ("-", "-")
        mark = "" if expected is None or (ids, images) == tuple(expected[split]) else "  <- differs"
        lines.append(f"{split:<8} {ids:>7} {ref_ids:>8} {images:>8} {ref_images:>8}{mark}")
    return "\n".join(lines)

"""`havana evaluate`: CMC / mAP / mINP of raw features or of a head's embeddings, plain and with the flip test."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the engines are imported when the command runs, not to print its help
    from havana.evaluation import EvaluationConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate", help="mAP, mINP and CMC of query vs gallery features (or a head's embeddings), ± flip test",
        description="Rank the gallery for every query of FEATURES (Market-1501 protocol) and write OUT as JSON: "
                    "'plain' (first view) and 'flip' (mean of plain and flipped views) metrics as fractions, with the "
                    "resolved settings and git SHA; also OUT.provenance.yaml. With --head, the head's z_mu of each "
                    "view is ranked instead of the raw features. Runs on CPU unless --device asks for a GPU.")
    parser.add_argument("--features", required=True, help="an HDF5 file written by `havana extract`")
    parser.add_argument("--head", help="a head.pt written by `havana train-head` (default: raw features)")
    parser.add_argument("--out", required=True, help="output JSON, e.g. results/<ds>/metrics/<extractor>/<row>/seed0.json")
    parser.add_argument("--config", help="YAML config whose 'evaluation' section gives metric, max_rank, rerank")
    parser.add_argument("--metric", choices=["euclidean", "cosine"], help="override evaluation.metric")
    parser.add_argument("--max-rank", type=int, help="override evaluation.max_rank (at least 10)")
    parser.add_argument("--rerank", action="store_true", default=None, help="apply k-reciprocal re-ranking")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default: the evaluate rule declares no GPU, so a job never waits on one), auto "
                             "(claim a free GPU), cuda or cuda:N")
    parser.add_argument("--tracking-uri", help="MLflow store, e.g. sqlite:///results/mlflow.db (none: no tracking)")
    parser.add_argument("--run-name", help="MLflow run name (default: evaluate/<OUT stem>)")
    parser.set_defaults(func=run)


def resolve_settings(args: argparse.Namespace) -> EvaluationConfig:
    """The config's `evaluation` section (defaults without --config) with the command-line overrides applied."""
    from havana import scoring
    from havana.config import from_mapping, load_yaml
    from havana.evaluation import EvaluationConfig

    settings = EvaluationConfig()
    if args.config:
        settings = from_mapping(EvaluationConfig, load_yaml(args.config).get("evaluation") or {}, "evaluation")
    overrides = {k: v for k, v in (("metric", args.metric), ("max_rank", args.max_rank), ("rerank", args.rerank))
                 if v is not None}
    return scoring.check_settings(dataclasses.replace(settings, **overrides))


def run(args: argparse.Namespace) -> int:
    """Score the features (or the head's embeddings of them) through havana.scoring; write metrics and provenance."""
    from havana import atomic, provenance, scoring
    from havana.device import select_device
    from havana.evaluation import RerankConfig
    from havana.tracking import job_run

    settings = resolve_settings(args)
    device = select_device(args.device)
    scored = scoring.score_file(args.features, args.head, settings, device, progress=True)
    plain, flip = scored.metrics["plain"], scored.metrics["flip"]
    record = {
        "features": {"path": args.features, "sha256": provenance.file_sha256(args.features), "attrs": scored.data.attrs},
        "head": {"path": args.head, "sha256": provenance.file_sha256(args.head)} if args.head else None,
        "evaluation": settings,
        "rerank": RerankConfig() if settings.rerank else None,
        "embedding_dim": scored.embedding_dim,
        "device": str(device),
    }
    out = Path(args.out)
    experiment = str(scored.data.attrs.get("dataset", "havana"))
    # The run-id file sits in a folder of its own per output: several seeds' metrics share one folder.
    with job_run(args.tracking_uri, experiment, args.run_name or f"evaluate/{out.stem}",
                 out.with_name(out.stem + ".mlflow"), params=provenance.to_plain(record)) as tracker:
        provenance_path = provenance.write_beside(out, record)
        try:
            atomic.write_json(out, {"plain": plain, "flip": flip, "provenance": provenance.record(record)})
        except BaseException:
            provenance_path.unlink(missing_ok=True)
            raise
        tracker.log_metrics({f"{prefix}{key}": value for prefix, block in (("", plain), ("flip_", flip))
                             for key, value in block.items() if key != "cmc"})
        tracker.log_artifact(out)
    print(f"havana evaluate: wrote {args.out}: mAP {100 * plain['mAP']:.1f}%, R1 {100 * plain['R1']:.1f}% "
          f"(flip: mAP {100 * flip['mAP']:.1f}%, R1 {100 * flip['R1']:.1f}%) over {plain['num_valid_queries']} "
          f"queries on {device}, {settings.metric}{' with re-ranking' if settings.rerank else ''}.")
    return 0

"""`havana evaluate`: CMC / mAP / mINP of raw features or of a head's embeddings, plain and with the flip test."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from havana.errors import HavanaError

if TYPE_CHECKING:  # torch and the engines are imported when the command runs, not to print its help
    import numpy as np
    import torch

    from havana.evaluation import EvaluationConfig
    from havana.features import FeatureSplit

RANKS = (1, 5, 10)  # reported as R1, R5, R10 beside the full CMC
HEAD_BATCH = 4096  # rows encoded by the head at once


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate", help="mAP, mINP and CMC of query vs gallery features (or a head's embeddings), ± flip test",
        description="Rank the gallery for every query of FEATURES (Market-1501 protocol) and write OUT as JSON: "
                    "'plain' (first view) and 'flip' (mean of plain and flipped views) metrics as fractions, with the "
                    "resolved settings and git SHA; also OUT.provenance.yaml. With --head, the head's z_mu of each "
                    "view is ranked instead of the raw features.")
    parser.add_argument("--features", required=True, help="an HDF5 file written by `havana extract`")
    parser.add_argument("--head", help="a head.pt written by `havana train-head` (default: raw features)")
    parser.add_argument("--out", required=True, help="output JSON, e.g. results/<ds>/metrics/<extractor>/<row>/seed0.json")
    parser.add_argument("--config", help="YAML config whose 'evaluation' section gives metric, max_rank, rerank")
    parser.add_argument("--metric", choices=["euclidean", "cosine"], help="override evaluation.metric")
    parser.add_argument("--max-rank", type=int, help="override evaluation.max_rank (at least 10)")
    parser.add_argument("--rerank", action="store_true", default=None, help="apply k-reciprocal re-ranking")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--tracking-uri", help="MLflow store, e.g. sqlite:///results/mlflow.db (none: no tracking)")
    parser.add_argument("--run-name", help="MLflow run name (default: evaluate/<OUT stem>)")
    parser.set_defaults(func=run)


def resolve_settings(args: argparse.Namespace) -> EvaluationConfig:
    """The config's `evaluation` section (defaults without --config) with the command-line overrides applied."""
    from havana.config import from_mapping, load_yaml
    from havana.evaluation import EvaluationConfig

    settings = EvaluationConfig()
    if args.config:
        settings = from_mapping(EvaluationConfig, load_yaml(args.config).get("evaluation") or {}, "evaluation")
    overrides = {k: v for k, v in (("metric", args.metric), ("max_rank", args.max_rank), ("rerank", args.rerank))
                 if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    if settings.metric not in ("euclidean", "cosine"):
        raise HavanaError(f"evaluation.metric '{settings.metric}' is unknown; use euclidean or cosine.")
    if settings.max_rank < max(RANKS):
        raise HavanaError(f"evaluation.max_rank must be at least {max(RANKS)} to report R10, got {settings.max_rank}.")
    return settings


def _check_views(name: str, split: FeatureSplit, path: str) -> None:
    """HavanaError unless a test split holds [N, 2, D] (plain, flipped) features."""
    if split.features.shape[1] != 2 or len(split.features) == 0:
        raise HavanaError(f"the '{name}' split of {path} holds features of shape {split.features.shape}, not [N>0, 2, D] "
                          "(plain, flipped); re-extract it with `havana extract`.")


def embed(head: torch.nn.Module, views: np.ndarray, device: torch.device) -> np.ndarray:
    """The head's z_mu for every view of [N, 2, D] features, as [N, 2, Z] float32."""
    import torch

    flat = torch.as_tensor(views.reshape(-1, views.shape[-1]))
    with torch.inference_mode():
        z_mu = [head.encode(flat[start:start + HEAD_BATCH].to(device))[0].float().cpu()
                for start in range(0, len(flat), HEAD_BATCH)]
    return torch.cat(z_mu).numpy().reshape(views.shape[0], views.shape[1], -1)


def metrics_entry(result: dict[str, Any]) -> dict[str, Any]:
    """evaluate()'s result with R1/R5/R10 read off the CMC, as written to the metrics JSON."""
    return {"mAP": result["mAP"], "mINP": result["mINP"], **{f"R{k}": result["cmc"][k - 1] for k in RANKS},
            "cmc": result["cmc"], "num_valid_queries": result["num_valid_queries"]}


def run(args: argparse.Namespace) -> int:
    """Load the features (and head), evaluate plain and flip-test embeddings, write the metrics and provenance."""
    from havana import atomic, provenance
    from havana.device import select_device
    from havana.evaluation import RerankConfig, evaluate, merge_flip
    from havana.features import read_features
    from havana.models.head import load_head
    from havana.tracking import job_run

    settings = resolve_settings(args)
    data = read_features(args.features, splits=("query", "gallery"))
    query, gallery = data["query"], data["gallery"]
    for name, split in (("query", query), ("gallery", gallery)):
        _check_views(name, split, args.features)
    device = select_device(args.device)
    q_views, g_views = query.features, gallery.features
    head_record = None
    if args.head:
        head = load_head(args.head, map_location=device)
        if head.config.feature_dim != q_views.shape[-1]:
            raise HavanaError(f"head {args.head} takes {head.config.feature_dim}-d inputs but {args.features} holds "
                              f"{q_views.shape[-1]}-d features; evaluate the head on its own extractor's features.")
        q_views, g_views = (embed(head, views, device) for views in (q_views, g_views))
        head_record = {"path": args.head, "sha256": provenance.file_sha256(args.head)}

    rerank = RerankConfig() if settings.rerank else None
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    options = dict(metric=settings.metric, max_rank=settings.max_rank, rerank=rerank, device=device, progress=True)
    plain = evaluate(q_views[:, 0], g_views[:, 0], *ids, **options)
    flip = evaluate(merge_flip(q_views), merge_flip(g_views), *ids, **options)

    record = {
        "features": {"path": args.features, "sha256": provenance.file_sha256(args.features), "attrs": data.attrs},
        "head": head_record,
        "evaluation": settings,
        "rerank": rerank,
        "embedding_dim": int(q_views.shape[-1]),
        "device": str(device),
    }
    out = Path(args.out)
    experiment = str(data.attrs.get("dataset", "havana"))
    # The run-id file sits in a folder of its own per output: several seeds' metrics share one folder.
    with job_run(args.tracking_uri, experiment, args.run_name or f"evaluate/{out.stem}",
                 out.with_name(out.stem + ".mlflow"), params=provenance.to_plain(record)) as tracker:
        provenance_path = provenance.write_beside(out, record)
        try:
            atomic.write_json(out, {"plain": metrics_entry(plain), "flip": metrics_entry(flip),
                                    "provenance": provenance.record(record)})
        except BaseException:
            provenance_path.unlink(missing_ok=True)
            raise
        tracker.log_metrics({f"{prefix}{key}": value for prefix, block in (("", plain), ("flip_", flip))
                             for key, value in metrics_entry(block).items() if key != "cmc"})
        tracker.log_artifact(out)
    print(f"havana evaluate: wrote {args.out}: mAP {100 * plain['mAP']:.1f}%, R1 {100 * plain['cmc'][0]:.1f}% "
          f"(flip: mAP {100 * flip['mAP']:.1f}%, R1 {100 * flip['cmc'][0]:.1f}%) over {plain['num_valid_queries']} "
          f"queries, {settings.metric}{' with re-ranking' if rerank else ''}.")
    return 0

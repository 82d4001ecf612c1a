"""`havana evaluate`: CMC / mAP / mINP of raw features or of a head's embeddings, plain and with the flip test."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from havana.errors import HavanaError

if TYPE_CHECKING:  # torch and the engines are imported when the command runs, not to print its help
    from havana.evaluation.rank import EvaluationConfig
    from havana.utils.tracking import JobRun


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="mAP, mINP and CMC of query vs gallery features (or a head's embeddings), ± flip test",
        description="Rank the gallery for every query of FEATURES (Market-1501 protocol) and write each OUT as JSON "
        "(one per seed; the features are read once and the job's interpreter serves every seed): "
        "'plain' (first view) and 'flip' (mean of plain and flipped views) metrics as fractions, with the "
        "resolved settings and git SHA; also OUT.provenance.yaml. With --head, the head's z_mu of each "
        "view is ranked instead of the raw features, and the metrics are logged into the head's own MLflow "
        "run (its mlflow_run_id file), so one runs-table row holds its switches and its mAP; raw "
        "features (the baseline) get a run of their own. Runs on CPU unless --device asks for a GPU.",
    )
    parser.add_argument("--features", required=True, help="an HDF5 file written by `havana extract`")
    parser.add_argument(
        "--head",
        nargs="+",
        help="head.pt files written by `havana train-head`, one per --out (default: raw features, scored once)",
    )
    parser.add_argument(
        "--out",
        required=True,
        nargs="+",
        help="output JSONs, one per seed, e.g. results/<ds>/metrics/<extractor>/<row>/seed0.json",
    )
    parser.add_argument("--config", help="YAML config whose 'evaluation' section gives metric, max_rank, rerank")
    parser.add_argument("--metric", help="override evaluation.metric: euclidean or cosine")
    parser.add_argument("--max-rank", type=int, help="override evaluation.max_rank")
    parser.add_argument("--rerank", action="store_true", default=None, help="apply k-reciprocal re-ranking")
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (default: the evaluate rule declares no GPU, so a job never waits on one), auto "
        "(claim a free GPU), cuda or cuda:N",
    )
    parser.add_argument("--tracking-uri", help="MLflow store, e.g. sqlite:///results/mlflow.db (none: no tracking)")
    parser.add_argument("--row", help="the table row evaluated (heads.rows name, or baseline): MLflow tag and run name")
    parser.add_argument(
        "--seed",
        "--seeds",
        type=int,
        nargs="+",
        help="each --out's seed (the head's, or the baseline copy's): MLflow tag",
    )
    parser.add_argument(
        "--run-name",
        nargs="+",
        help="MLflow run name per --out without a head run (default: '<ROW> seed<S> · <extractor> · <dataset>')",
    )
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    reads = {"--features": args.features, "--config": args.config}
    heads = args.head or []
    reads |= {"--head" if len(heads) == 1 else f"--head[{index}]": head for index, head in enumerate(heads)}
    return reads, {"--out": (args.out, "file")}


def resolve_settings(args: argparse.Namespace, config: dict[str, Any]) -> EvaluationConfig:
    """The loaded config's `evaluation` section (defaults when it has none, e.g. without --config) with the
    command-line overrides applied."""
    from havana.config import from_mapping, override
    from havana.evaluation.rank import EvaluationConfig

    settings = from_mapping(EvaluationConfig, config.get("evaluation") or {}, "evaluation")
    return override(settings, {"metric": args.metric, "max_rank": args.max_rank, "rerank": args.rerank}, "evaluation")


@contextlib.contextmanager
def evaluation_run(
    args: argparse.Namespace,
    record: dict[str, Any],
    attrs: dict[str, Any],
    evaluated: Evaluated,
    config: dict[str, Any],
) -> Iterator[JobRun]:
    """The MLflow run the metrics go to: the head's own run when it is in this store (the evaluation settings become
    its eval.* tags), else a run of this job, named and tagged as its table row (the baseline's case); `config` is
    the command's loaded --config ({} without one)."""
    from havana.utils import provenance
    from havana.utils.tracking import cell_tags, existing_run, job_run, run_name

    if evaluated.head:
        with existing_run(args.tracking_uri, Path(evaluated.head).parent) as head_run:
            if head_run is not None:
                settings = record["evaluation"]
                head_run.set_tags(
                    {
                        "eval.metric": settings.metric,
                        "eval.max_rank": settings.max_rank,
                        "eval.rerank": provenance.to_plain(record["rerank"]),
                        "eval.features": args.features,
                    }
                )
                yield head_run
                return
    dataset, extractor = str(attrs.get("dataset", "havana")), str(attrs.get("extractor", ""))
    row = args.row or (None if evaluated.head else "baseline")
    config = config if row else {}
    fed = config.get("table_cells")  # a job config carries the cells it feeds (havana.dag.jobs.write_job_config)
    if fed is None and config:
        from havana.dag.jobs import cells_fed  # a hand-run command: the job declarations say which cells it feeds

        fed = cells_fed(config, dataset, extractor, row)
    out = Path(evaluated.out)
    # The run-id file sits in a folder of its own per output: several seeds' metrics share one folder.
    with job_run(
        args.tracking_uri,
        dataset,
        evaluated.run_name or run_name(row or out.stem, evaluated.seed, extractor, dataset),
        out.with_name(out.stem + ".mlflow"),
        params=provenance.to_plain(record),
        tags=cell_tags(
            dataset,
            extractor,
            row,
            evaluated.seed,
            fed or (),
            {  # the config_hash tag: the extractor's features and the evaluation, without the seed
                "dataset": dataset,
                "extractor": {"name": extractor, "config_hash": attrs.get("config_hash")},
                "evaluation": record["evaluation"],
                "rerank": record["rerank"],
            },
        ),
    ) as tracker:
        yield tracker


@dataclasses.dataclass(frozen=True)
class Evaluated:
    """One output of the command: the head scored (None: the raw features), where its metrics go, its seed and run
    name."""

    head: str | None
    out: str
    seed: int | None
    run_name: str | None


def outputs(args: argparse.Namespace) -> list[Evaluated]:
    """The command's outputs, --head, --seed and --run-name paired with --out in order (one sentence when the counts
    differ)."""
    count = len(args.out)
    for option, values in (("--head", args.head), ("--seed", args.seed), ("--run-name", args.run_name)):
        if values is not None and len(values) != count:
            raise HavanaError(f"give one {option} per --out: {len(values)} {option} for {count} --out.")
    return [
        Evaluated(head, out, seed, name)
        for head, out, seed, name in zip(
            args.head or [None] * count, args.out, args.seed or [None] * count, args.run_name or [None] * count
        )
    ]


def run(args: argparse.Namespace) -> int:
    """Read the features once, score each head (or the raw features, once for every seed's copy) through
    havana.evaluation.scoring, and write each output's metrics and provenance."""
    from havana.config import load_yaml
    from havana.evaluation import scoring
    from havana.utils import provenance
    from havana.utils.device import select_device

    wanted = outputs(args)
    config = load_yaml(args.config) if args.config else {}
    settings = resolve_settings(args, config)
    device = select_device(args.device)
    data = scoring.read_test_features(args.features)
    features = {"path": args.features, "sha256": provenance.file_sha256(args.features), "attrs": data.attrs}
    raw = None
    for evaluated in wanted:
        if evaluated.head is None:
            raw = raw or scoring.score_data(data, None, args.features, settings, device, progress=True)
            scored = raw
        else:
            scored = scoring.score_data(data, evaluated.head, args.features, settings, device, progress=True)
        write_metrics(args, config, settings, device, features, scored, evaluated)
    return 0


def write_metrics(
    args: argparse.Namespace,
    config: dict[str, Any],
    settings: EvaluationConfig,
    device: Any,
    features: dict[str, Any],
    scored: Any,
    evaluated: Evaluated,
) -> None:
    """One output: the metrics JSON and its provenance, logged into its MLflow run, and a one-line summary.
    `features` is the feature file's provenance entry (path, sha256, attributes), hashed once per job."""
    from havana.evaluation.rank import RerankConfig
    from havana.utils import atomic, provenance

    plain, flip = scored.metrics["plain"], scored.metrics["flip"]
    record = {
        "features": features,
        "head": {"path": evaluated.head, "sha256": provenance.file_sha256(evaluated.head)} if evaluated.head else None,
        "evaluation": settings,
        "rerank": RerankConfig() if settings.rerank else None,
        "embedding_dim": scored.embedding_dim,
        "device": str(device),
    }
    out = Path(evaluated.out)
    with evaluation_run(args, record, scored.data.attrs, evaluated, config) as tracker:
        built = provenance.record(record)  # once: the file beside and the JSON hold the same record
        provenance_path = provenance.write_record_beside(out, built)
        try:
            atomic.write_json(out, {"plain": plain, "flip": flip, "provenance": built})
        except BaseException:
            provenance_path.unlink(missing_ok=True)
            raise
        tracker.log_metrics(  # eval/…: a section of its own in MLflow's charts, apart from the loss/ and grad/ ones
            {
                f"eval/{prefix}{key}": value
                for prefix, block in (("", plain), ("flip_", flip))
                for key, value in block.items()
                if key not in ("cmc", "per_query")
            }
        )
        tracker.log_artifact(out, "evaluation")
    print(
        f"havana evaluate: wrote {evaluated.out}: mAP {100 * plain['mAP']:.1f}%, R1 {100 * plain['R1']:.1f}% "
        f"(flip: mAP {100 * flip['mAP']:.1f}%, R1 {100 * flip['R1']:.1f}%) over {plain['num_valid_queries']} "
        f"queries on {device}, {settings.metric}{' with re-ranking' if settings.rerank else ''}."
    )

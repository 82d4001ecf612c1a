"""`havana train-head`: train the heads of one ablation row (heads.rows) on a feature file, one per seed, stacked in
one process (havana.engine.train_head)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-head` subcommand."""
    parser = subparsers.add_parser(
        "train-head",
        help="train HAVANA heads (one per seed) on extracted features (checkpointed, resumable)",
        description="Train heads.rows.<ROW> of the config on the train split of FEATURES, one head per seed, all "
        "seeds stacked in one process (each head equals its seed trained alone); writes DIR/head.pt, "
        "DIR/history.csv and provenance for each --out DIR, and a checkpoint.pt in the first DIR while it "
        "runs (rerunning resumes from it). `havana evaluate --head DIR/head.pt` scores a head.",
    )
    parser.add_argument("--features", required=True, help="results/<ds>/features/<extractor>.h5")
    parser.add_argument("--row", required=True, help="a heads.rows.<ROW> entry, e.g. havana or vnae_jst")
    parser.add_argument("--config", required=True, help="YAML config holding heads:")
    parser.add_argument(
        "--out",
        required=True,
        nargs="+",
        metavar="DIR",
        help="one output folder per seed, in the order of --seeds, e.g. results/<ds>/heads/<extractor>/<row>/seed0",
    )
    parser.add_argument(
        "--seeds",
        "--seed",
        type=int,
        nargs="+",
        default=[0],
        metavar="SEED",
        help="the heads' seeds, one head each (default 0)",
    )
    parser.add_argument(
        "--dataset", help="dataset name for beta_by_dataset and MLflow (default: the features' attribute)"
    )
    parser.add_argument("--epochs", type=int, help="override heads.train.epochs")
    parser.add_argument("--device", help="override heads.train.device: auto, cpu, cuda or cuda:N")
    parser.add_argument("--tracking-uri", help="MLflow store, e.g. sqlite:///results/mlflow.db (none: no tracking)")
    parser.add_argument(
        "--run-name",
        nargs="+",
        metavar="NAME",
        help="MLflow run name per seed (default: '<ROW> seed<S> · <extractor> · <dataset>')",
    )
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {"--features": args.features, "--config": args.config}, {"--out": (args.out, "folder")}


def run(args: argparse.Namespace) -> int:
    """Resolve the row and training config, train, and print a one-line summary."""
    from havana.config import from_mapping, load_yaml, override, section
    from havana.data.features import read_features
    from havana.engine.train_head import HeadRun, train_heads  # torch: imported to run, not to print help
    from havana.errors import HavanaError
    from havana.layout import HEAD_FILES
    from havana.models.head import HeadTrainConfig, resolve_row
    from havana.utils.device import select_device

    names = args.run_name or [None] * len(args.seeds)
    if len(args.out) != len(args.seeds) or len(names) != len(args.seeds):
        raise HavanaError(
            f"give one --out folder (and one --run-name, if any) per seed: {len(args.seeds)} seeds, "
            f"{len(args.out)} --out, {len(args.run_name or [])} --run-name."
        )
    config = load_yaml(args.config)
    heads = section(config, "heads")
    train = from_mapping(HeadTrainConfig, heads.get("train") or {}, "heads.train")
    train = override(train, {"epochs": args.epochs, "device": args.device}, "heads.train")
    features = read_features(args.features)
    dataset = args.dataset or str(features.attrs.get("dataset", Path(args.features).resolve().parents[1].name))
    row = resolve_row(config, args.row, dataset)
    fed = config.get("table_cells")  # a job config carries the cells it feeds (havana.dag.jobs.write_job_config)
    if fed is None:
        from havana.dag.jobs import cells_fed  # a hand-run command: the job declarations say which cells it feeds

        fed = cells_fed(config, dataset, str(features.attrs.get("extractor", "")), args.row)
    runs = [
        HeadRun(
            out_dir=Path(out),
            row_name=args.row,
            dataset=dataset,
            seed=seed,
            tracking_uri=args.tracking_uri,
            run_name=name,
            table_cells=tuple(fed),
        )
        for seed, out, name in zip(args.seeds, args.out, names)
    ]
    lasts = train_heads(features, row, train, runs, select_device(train.device))
    for run, last in zip(runs, lasts):
        summary = ", ".join(f"{name} {value:.4g}" for name, value in last.items() if value)
        print(
            f"havana train-head: {args.row} (seed {run.seed}) trained for {train.epochs} epochs -> "
            f"{run.out_dir / HEAD_FILES['head']}" + (f" (last epoch: {summary})" if summary else "")
        )
    return 0

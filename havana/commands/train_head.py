"""`havana train-head`: train one HAVANA head (an ablation row of heads.rows) on a feature file."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-head` subcommand."""
    parser = subparsers.add_parser(
        "train-head", help="train a HAVANA head on extracted features (checkpointed, resumable)",
        description="Train heads.rows.<ROW> of the config on the train split of FEATURES; writes DIR/head.pt, "
                    "DIR/history.csv and provenance, and DIR/checkpoint.pt while it runs (rerunning resumes from it). "
                    "`havana evaluate --head DIR/head.pt` scores the head.")
    parser.add_argument("--features", required=True, help="results/<ds>/features/<extractor>.h5")
    parser.add_argument("--row", required=True, help="a heads.rows.<ROW> entry, e.g. havana or vnae_jst")
    parser.add_argument("--config", required=True, help="YAML config holding heads:")
    parser.add_argument("--out", required=True, help="output folder, e.g. results/<ds>/heads/<extractor>/<row>/seed0")
    parser.add_argument("--seed", type=int, default=0, help="seed of every RNG (default 0)")
    parser.add_argument("--dataset", help="dataset name for beta_by_dataset and MLflow (default: the features' attribute)")
    parser.add_argument("--epochs", type=int, help="override heads.train.epochs")
    parser.add_argument("--device", help="override heads.train.device: auto, cpu, cuda or cuda:N")
    parser.add_argument("--tracking-uri", help="MLflow store, e.g. sqlite:///results/mlflow.db (none: no tracking)")
    parser.add_argument("--run-name", help="MLflow run name (default: '<ROW> seed<S> · <extractor> · <dataset>')")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the row and training config, train, and print a one-line summary."""
    from havana.config import from_mapping, load_yaml, override, section
    from havana.device import select_device
    from havana.features import read_features
    from havana.models.head import HeadTrainConfig, RowConfig
    from havana.report import tables
    from havana.train_head import HeadRun, train_head  # torch: imported to run, not to print help

    config = load_yaml(args.config)
    heads = section(config, "heads")
    row = from_mapping(RowConfig, section(heads, "rows", args.row), f"heads.rows.{args.row}")
    train = from_mapping(HeadTrainConfig, heads.get("train") or {}, "heads.train")
    train = override(train, {"epochs": args.epochs, "device": args.device}, "heads.train")
    features = read_features(args.features)
    dataset = args.dataset or str(features.attrs.get("dataset", Path(args.features).resolve().parents[1].name))
    row = row.with_beta(section(heads, "beta_by_dataset", dataset)) if row.beta is None else row
    fed = config["table_cells"] if "table_cells" in config else tables.cells_fed(  # a job config carries its cells
        config, dataset, str(features.attrs.get("extractor", "")), args.row)
    head_run = HeadRun(out_dir=Path(args.out), row_name=args.row, dataset=dataset, seed=args.seed,
                       tracking_uri=args.tracking_uri, run_name=args.run_name, table_cells=tuple(fed))
    last = train_head(features, row, train, head_run, select_device(train.device))
    summary = ", ".join(f"{name} {value:.4g}" for name, value in last.items() if value)
    print(f"havana train-head: {args.row} (seed {args.seed}) trained for {train.epochs} epochs -> {args.out}/head.pt"
          + (f" (last epoch: {summary})" if summary else ""))
    return 0

"""`havana train-extractor`: train one baseline extractor (BoT or MGN) on a manifest's train split."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-extractor` subcommand."""
    parser = subparsers.add_parser(
        "train-extractor",
        help="train a BoT/MGN extractor (checkpointed by wall-clock interval and on SIGTERM, resumable)",
        description="Train extractors.<NAME> of the config on the train split of MANIFEST; writes DIR/model.pt, "
        "DIR/model.pt.provenance.yaml and DIR/checkpoint.pt (rerunning resumes from it); with train.loader decoded, "
        "DIR/train_images.pt holds the decoded train images while it trains.",
    )
    parser.add_argument("--manifest", required=True, help="resources/<ds>/manifest.csv (paths relative to its folder)")
    parser.add_argument("--config", required=True, help="YAML config holding extractors.<NAME>")
    parser.add_argument("--extractor", required=True, help="an extractors.<NAME> entry, e.g. bot_r50")
    parser.add_argument("--out", required=True, help="output folder, e.g. results/<ds>/extractors/<NAME>")
    parser.add_argument("--seed", type=int, default=0, help="seed of every RNG (default 0)")
    parser.add_argument("--epochs", type=int, help="override extractors.<NAME>.train.epochs")
    parser.add_argument("--device", help="override train.device: auto, cpu, cuda or cuda:N")
    parser.add_argument("--tracking-uri", help="MLflow store, e.g. sqlite:///results/mlflow.db (none: no tracking)")
    parser.add_argument("--experiment", help="MLflow experiment (default: the manifest's folder name, the dataset)")
    parser.add_argument("--run-name", help="MLflow run name (default: 'extractor · <NAME> · <dataset>')")
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {"--manifest": args.manifest, "--config": args.config}, {"--out": (args.out, "folder")}


def run(args: argparse.Namespace) -> int:
    """Load the extractor config, apply overrides, train, and print a one-line summary."""
    from havana.config import load_yaml, override
    from havana.engine.train_extractor import train_extractor  # torch: imported to run, not to print help
    from havana.models.extractor_config import extractor_config
    from havana.utils.tracking import cell_tags, run_name

    config = extractor_config(load_yaml(args.config), args.extractor)
    train = override(config.train, {"epochs": args.epochs, "device": args.device}, f"extractors.{args.extractor}.train")
    config = dataclasses.replace(config, train=train)
    dataset = Path(args.manifest).resolve().parent.name
    experiment = args.experiment or dataset
    result = train_extractor(
        args.manifest,
        config,
        args.out,
        seed=args.seed,
        tracking_uri=args.tracking_uri,
        experiment=experiment,
        run_name=args.run_name or run_name("extractor", None, args.extractor, dataset),
        tags=cell_tags(dataset, args.extractor, seed=args.seed),
    )
    last = ", ".join(
        f"{k} {v:.4g}" for k, v in result.last_metrics.items() if k in ("loss", "ce", "triplet", "accuracy")
    )
    print(
        f"havana train-extractor: {args.extractor} trained for {result.epochs} epochs -> {result.model_path}"
        + (f" (last epoch: {last})" if last else "")
    )
    return 0

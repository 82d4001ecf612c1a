"""`havana runs`: the ablation comparison of a table from the MLflow store (rows × seeds, switches, metrics), one
configuration per row; `--compare A B`: each cell before and after, with the difference and its 95% interval."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from havana.errors import HavanaError
from havana.report.runs import DEFAULT_METRICS  # standard library only: help stays fast


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `runs` subcommand."""
    parser = subparsers.add_parser(
        "runs",
        help="print the ablation runs of a table from the MLflow store, or compare two configurations, commits or "
        "results folders",
        description="Read the head runs and baseline evaluation runs of EXPERIMENT (a dataset) from the MLflow store "
        "and print one line per run (row label, configuration hash, seed, extractor, loss terms on, weights, "
        "metrics in percent) and a mean ± std line per configuration: the comparison the MLflow UI shows, "
        "for a terminal. A row with runs of several configurations (an edited row retrained) shows one: the "
        "newest with every seed, unless --config-hash or --all-configs says otherwise. It also saves that "
        "comparison as a view of the UI's runs table (filter, grouping, columns) and prints its link. "
        "With --compare A B (two config hashes, two git SHAs or two results folders) it prints each cell "
        "before (A) and after (B), the difference and its 95%% paired-bootstrap interval instead.",
    )
    parser.add_argument("--tracking-uri", help="the store, e.g. sqlite:///results/mlflow.db")
    parser.add_argument("--experiment", help="the experiment: a dataset name, e.g. market1501")
    parser.add_argument("--table", help="only the runs feeding this table's cells, e.g. table3 (tag table_cells)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        help=f"metrics to show (default: {' '.join(DEFAULT_METRICS)})",
    )
    parser.add_argument("--config-hash", help="show this configuration (a config_hash prefix) where a row has it")
    parser.add_argument("--all-configs", action="store_true", help="show every configuration of every row")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="compare two config hashes, two git SHAs or two results folders, cell by cell",
    )
    parser.set_defaults(func=run)


def _store(args: argparse.Namespace) -> tuple[str, str]:
    if not args.tracking_uri or not args.experiment:
        raise HavanaError("reading the MLflow store needs --tracking-uri and --experiment (a dataset name).")
    return args.tracking_uri, args.experiment


def compare(args: argparse.Namespace) -> int:
    """Print each cell of A and B with the difference B − A and its interval."""
    from havana.report.compare import folder_side, render_compare
    from havana.report.runs import mlflow_side

    sides = [
        folder_side(reference) if Path(reference).is_dir() else mlflow_side(*_store(args), reference, args.table)
        for reference in args.compare
    ]
    print(render_compare(sides[0], sides[1], args.metrics, tuple(args.compare)), end="")
    return 0


def run(args: argparse.Namespace) -> int:
    """Read the runs and print the comparison (or compare two sets of runs)."""
    if args.compare:
        return compare(args)
    from havana.report.runs import read_runs, render_comparison, save_view, select_configurations

    tracking_uri, experiment = _store(args)
    records = read_runs(tracking_uri, experiment, args.table)
    if not records:
        which = f" feeding {args.table}" if args.table else ""
        raise HavanaError(
            f"experiment '{experiment}' in {tracking_uri} has no head or baseline runs{which}; "
            "run the pipeline (or that table's target) first."
        )
    selection = select_configurations(records, args.config_hash, args.all_configs, args.table)
    print(render_comparison(selection.records, args.metrics, args.table), end="")
    for note in selection.notes:
        print(note)
    sys.stdout.flush()
    page = save_view(
        tracking_uri,
        experiment,
        args.table,
        selection.records,
        args.metrics,
        narrowed=len(selection.records) < len(records),
    )
    print(
        f"The same runs in the MLflow UI (`havana ui --backend-store-uri {tracking_uri}`), as a saved view "
        f"with these columns: http://127.0.0.1:5000/{page}",
        file=sys.stderr,
    )  # stdout stays the table
    return 0

"""`havana runs`: the ablation comparison of a table from the MLflow store (rows × seeds, switches, metrics)."""

from __future__ import annotations

import argparse
import sys

from havana.errors import HavanaError
from havana.report.runs import DEFAULT_METRICS  # standard library only: help stays fast


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `runs` subcommand."""
    parser = subparsers.add_parser(
        "runs",
        help="print the ablation runs of a table from the MLflow store (rows × seeds, switches, metrics)",
        description="Read the head runs and baseline evaluation runs of EXPERIMENT (a dataset) from the MLflow store "
        "and print one line per run (row, seed, extractor, loss terms on, weights, metrics in percent) "
        "and a mean ± std line per row: the comparison the MLflow UI shows, for a terminal. It also saves "
        "that comparison as a view of the UI's runs table (filter, columns) and prints its link.",
    )
    parser.add_argument("--tracking-uri", required=True, help="the store, e.g. sqlite:///results/mlflow.db")
    parser.add_argument("--experiment", required=True, help="the experiment: a dataset name, e.g. market1501")
    parser.add_argument("--table", help="only the runs feeding this table's cells, e.g. table3 (tag table_cells)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        help=f"metrics to show (default: {' '.join(DEFAULT_METRICS)})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the runs and print the comparison."""
    from havana.report.runs import read_runs, render_comparison, save_view

    records = read_runs(args.tracking_uri, args.experiment, args.table)
    if not records:
        which = f" feeding {args.table}" if args.table else ""
        raise HavanaError(
            f"experiment '{args.experiment}' in {args.tracking_uri} has no head or baseline runs{which}; "
            "run the pipeline (or that table's target) first."
        )
    print(render_comparison(records, args.metrics), end="")
    sys.stdout.flush()
    page = save_view(args.tracking_uri, args.experiment, args.table, records, args.metrics)
    print(
        f"The same runs in the MLflow UI (`mlflow ui --backend-store-uri {args.tracking_uri}`), as a saved view "
        f"with these columns: http://127.0.0.1:5000/{page}",
        file=sys.stderr,
    )  # stdout stays the table
    return 0

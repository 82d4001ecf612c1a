"""`havana summary`: judge every paper table's cells against the paper's values (the reproduction summary)."""

from __future__ import annotations

import argparse

from havana.config import load_yaml
from havana.layout import Layout
from havana.report import model, summary


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `summary` subcommand."""
    parser = subparsers.add_parser(
        "summary",
        help="the reproduction summary: which table cells reproduce the paper's value",
        description="Write <out-prefix>.md, .csv, .tex and .html judging every cell with a paper value of the tables "
        "named by the config's summary.tables (default: every tables.table<N>), with the tolerance of "
        "summary.tolerance.",
    )
    parser.add_argument("--config", required=True, help="the YAML config holding 'tables', 'summary' and 'seeds'")
    parser.add_argument("--results-dir", help="folder holding the metrics (default: the config's results_dir)")
    parser.add_argument(
        "--out-prefix", required=True, help="output path without extension, e.g. results/tables/summary"
    )
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {"--config": args.config}, {"--out-prefix": (args.out_prefix, "prefix")}


def run(args: argparse.Namespace) -> int:
    """Judge, write, and print the counts."""
    config = load_yaml(args.config)
    verdicts = summary.write_summary(config, args.out_prefix, Layout.of(config, args.results_dir))
    print(f"havana summary: wrote {args.out_prefix}.{{md,csv,tex,html}}: {model.counts_text(verdicts)}")
    return 0

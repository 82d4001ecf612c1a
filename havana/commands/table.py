"""`havana table`: render one paper table from the metrics its cells read (declared in havana.dag.jobs)."""

from __future__ import annotations

import argparse

from havana.config import load_yaml
from havana.layout import Layout
from havana.report import tables


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `table` subcommand."""
    parser = subparsers.add_parser(
        "table",
        help="render a paper table (Markdown, CSV, LaTeX, HTML) from per-seed metrics",
        description="Write <out-prefix>.md, .csv, .tex and .html for tables.<name> of the config: reproduced mean ± "
        "std over seeds beside the paper's value and the difference. Every cell on an active dataset needs its "
        "metrics file for every seed; a missing one is an error naming it.",
    )
    parser.add_argument("--config", required=True, help="the YAML config holding 'tables', 'seeds' and 'heads.rows'")
    parser.add_argument("--table", required=True, help="a tables.<name> entry such as table3")
    parser.add_argument("--results-dir", help="folder holding the metrics (default: the config's results_dir)")
    parser.add_argument("--out-prefix", required=True, help="output path without extension, e.g. results/tables/table3")
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {"--config": args.config}, {"--out-prefix": (args.out_prefix, "prefix")}


def run(args: argparse.Namespace) -> int:
    """Render the table and print a one-line summary."""
    config = load_yaml(args.config)
    model = tables.write_table(config, args.table, args.out_prefix, Layout.of(config, args.results_dir))
    cells = [cell for row in model.rows for cell in row.cells]
    found = sum(1 for cell in cells if cell.mean is not None)
    print(
        f"havana table: wrote {args.out_prefix}.{{md,csv,tex,html}}: {found}/{len(cells)} reproduced cells run "
        "(the others are on datasets outside active_datasets)."
    )
    return 0

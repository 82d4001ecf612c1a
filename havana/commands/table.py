"""`havana table`: render one paper table (or the reproduction summary) from the metrics under a results folder."""

from __future__ import annotations

import argparse

from havana.config import load_yaml
from havana.report import summary, tables


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `table` subcommand."""
    parser = subparsers.add_parser(
        "table", help="render a paper table (Markdown, CSV, LaTeX, HTML) from per-seed metrics",
        description="Write <out-prefix>.md, .csv, .tex and .html for tables.<name> of the config: reproduced mean ± std over "
                    "seeds beside the paper's value and the difference. '--table summary' writes the reproduction summary.")
    parser.add_argument("--config", required=True, help="the YAML config holding 'tables', 'seeds' and 'heads.rows'")
    parser.add_argument("--table", required=True, help="a tables.<name> entry such as table3, or 'summary'")
    parser.add_argument("--results-dir", required=True, help="folder holding <dataset>/metrics/<extractor>/<row>/seed<k>.json")
    parser.add_argument("--out-prefix", required=True, help="output path without extension, e.g. results/tables/table3")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render the table and print a one-line summary."""
    config = load_yaml(args.config)
    if args.table == "summary":
        verdicts = summary.write_summary(config, args.results_dir, args.out_prefix)
        print(f"havana table: wrote {args.out_prefix}.{{md,csv,tex,html}}: {summary.counts_text(verdicts)}")
        return 0
    model = tables.write_table(config, args.table, args.results_dir, args.out_prefix)
    cells = [cell for row in model.rows for cell in row.cells]
    found = sum(1 for cell in cells if cell.mean is not None)
    print(f"havana table: wrote {args.out_prefix}.{{md,csv,tex,html}}: {found}/{len(cells)} reproduced cells have metrics.")
    return 0

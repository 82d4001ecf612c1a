"""`havana plan`: before anything runs, what `snakemake all` will cost under a config: jobs, hours, disk per stage."""

from __future__ import annotations

import argparse

DEFAULT_CONFIG = "config/config.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `plan` subcommand."""
    parser = subparsers.add_parser(
        "plan",
        help="print each stage's jobs, estimated device-hours and disk kept and written, before a run",
        description="Estimate `snakemake all` under a config before it runs: per stage (prepare, train_extractor, "
        "extract_features, train_head, evaluate, tables/figures) the jobs, the device-hours on each "
        "device kind with rates (havana/dag/costs.py, each marked measured or extrapolated), and the disk "
        "kept and written under results/; then the totals.",
    )
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"the workflow's config file (default {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--measured",
        metavar="RESULTS_DIR",
        help="also print the job-seconds Snakemake measured per stage in RESULTS_DIR/benchmarks/ (every rule writes "
        "a benchmark file) beside the plan's estimate for this machine's kind (cpu), with their ratio",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the plan."""
    from havana.config import load_yaml
    from havana.dag.plan import format_measured, format_plan, make_plan, measured_stages

    plan = make_plan(load_yaml(args.config))
    print(format_plan(plan))
    if args.measured:
        print()
        print(format_measured(plan, measured_stages(args.measured)))
    return 0

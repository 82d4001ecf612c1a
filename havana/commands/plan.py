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
        help="a finished run on this machine: print the job-seconds Snakemake measured per stage in "
        "RESULTS_DIR/benchmarks/ (every rule writes a benchmark file) beside the plan of --measured-config for this "
        "machine's kind (cpu), with their ratio; then plan --config with the cpu rates replaced by the measured ones, "
        "stage by stage (column 'measured')",
    )
    parser.add_argument(
        "--measured-config",
        metavar="CONFIG",
        help="the config RESULTS_DIR was run with (default: --config), e.g. config/demo.yaml to plan the paper with "
        "the demo's measured rates",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the plan."""
    from havana.config import load_yaml
    from havana.dag.plan import calibrated, format_measured, format_plan, make_plan, measured_stages, stage_factors

    plan = make_plan(load_yaml(args.config))
    if not args.measured:
        print(format_plan(plan))
        return 0
    measured = measured_stages(args.measured)
    reference = plan if args.measured_config in (None, args.config) else make_plan(load_yaml(args.measured_config))
    factors = stage_factors(reference, measured)
    print(format_measured(reference, measured))
    print()
    print(format_plan(calibrated(plan, factors, f"{args.measured} ({args.measured_config or args.config})")))
    return 0

"""`havana figure`: draw one of the paper's Figures 5–9 from the files it reads (declared in havana.dag.jobs)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `figure` subcommand."""
    parser = subparsers.add_parser(
        "figure",
        help="draw a paper figure (fig5 … fig9) as PNG",
        description="Draw figures.<name> of the config from metrics JSONs, history.csv files, feature HDF5 files and "
        "head.pt files (the job encodes the features with each head) and dataset images for fig5. Each file it "
        "reads must exist; a missing one is an error naming it. Datasets outside active_datasets get no panel.",
    )
    parser.add_argument("--config", required=True, help="the YAML config holding 'figures', 'seeds' and 'heads.rows'")
    # The names are havana.report.figures.FIGURES, checked when drawing (importing it here would load matplotlib).
    parser.add_argument("--figure", required=True, help="which figure to draw: fig5 … fig9")
    parser.add_argument(
        "--results-dir", help="folder holding <dataset>/{metrics,heads,features}/… (default: the config's results_dir)"
    )
    parser.add_argument(
        "--resources-dir",
        help="folder holding <dataset>/manifest.csv and its images (default: the config's resources_dir)",
    )
    parser.add_argument("--out", required=True, help="the PNG to write, e.g. results/figures/fig9_cost.png")
    parser.set_defaults(func=run, io=io)


def io(args: argparse.Namespace) -> tuple[dict, dict]:
    """What the command reads and writes, for the CLI's collision check (havana.utils.pathsafety.check_io)."""
    return {"--config": args.config}, {"--out": (args.out, "file")}


def run(args: argparse.Namespace) -> int:
    """Draw the figure, write its provenance beside it, and print a one-line summary."""
    import dataclasses

    from havana.config import load_yaml, section
    from havana.layout import Layout
    from havana.report import figures
    from havana.utils import provenance

    config = load_yaml(args.config)
    overrides = {k: v for k, v in (("results", args.results_dir), ("resources", args.resources_dir)) if v}
    layout = dataclasses.replace(Layout.of(config), **overrides)
    path = figures.write_figure(config, args.figure, args.out, layout)
    provenance.write_beside(
        path,
        {
            "figure": args.figure,
            "settings": section(config, "figures", args.figure),
            "seeds": config.get("seeds"),
            "active_datasets": config.get("active_datasets"),
            "results_dir": layout.results,
            "resources_dir": layout.resources,
        },
    )
    print(f"havana figure: wrote {path}")
    return 0

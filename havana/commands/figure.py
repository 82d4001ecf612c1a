"""`havana figure`: draw one of the paper's Figures 5–9 from the runs under a results folder."""

from __future__ import annotations

import argparse

FIGURES = ("fig5", "fig6", "fig7", "fig8", "fig9")  # havana.report.figures.FIGURES (matplotlib: imported to draw)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `figure` subcommand."""
    parser = subparsers.add_parser(
        "figure", help="draw a paper figure (fig5 … fig9) as PNG",
        description="Draw figures.<name> of the config from metrics JSONs, history.csv files, feature and embedding "
                    "HDF5 files (and dataset images for fig5). Panels whose inputs are absent say 'no data for …'.")
    parser.add_argument("--config", required=True, help="the YAML config holding 'figures', 'seeds' and 'heads.rows'")
    parser.add_argument("--figure", required=True, choices=FIGURES, help="which figure to draw")
    parser.add_argument("--results-dir", required=True, help="folder holding <dataset>/{metrics,heads,features}/…")
    parser.add_argument("--resources-dir", required=True, help="folder holding <dataset>/manifest.csv and its images")
    parser.add_argument("--out", required=True, help="the PNG to write, e.g. results/figures/fig9_params.png")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Draw the figure, write its provenance beside it, and print a one-line summary."""
    from havana import provenance
    from havana.config import load_yaml, section
    from havana.report import figures

    config = load_yaml(args.config)
    path = figures.write_figure(config, args.figure, args.results_dir, args.resources_dir, args.out)
    provenance.write_beside(path, {"figure": args.figure, "settings": section(config, "figures", args.figure),
                                   "seeds": config.get("seeds"), "results_dir": args.results_dir,
                                   "resources_dir": args.resources_dir})
    print(f"havana figure: wrote {path}")
    return 0

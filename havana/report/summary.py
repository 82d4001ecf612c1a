"""The reproduction summary: for every table cell with a paper value, whether the reproduced value matches it.

Rule (havana.report.model.verdict): an equivalence test of the mean over seeds against paper ± tolerance; cells not on
the paper's datasets and extractor are "not judged", with the reason; a cell on a dataset the run does not cover
(active_datasets) is "not run". The tolerance and the
tables judged come from the config's top-level `summary` section.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from havana.errors import HavanaError
from havana.layout import Layout, active_datasets, summary_tables
from havana.layout import seeds as config_seeds
from havana.report import html
from havana.report.model import (
    HEADINGS,
    RunKey,
    Verdict,
    build_table,
    collect_metrics,
    counts_text,
    fmt,
    judge,
    not_judged_reason,
    required_runs,
    rule_text,
    summary_config,
    table_spec,
    verdict_fields,
)
from havana.report.tables import latex_escape, write_rendered


def render_markdown(verdicts: Sequence[Verdict], tolerance: float) -> str:
    """Counts and rule at the top, then one line per judged cell."""
    lines = [
        "# Reproduction summary",
        "",
        f"**{counts_text(verdicts)}**",
        "",
        rule_text(tolerance),
        "",
        "| " + " | ".join(HEADINGS) + " |",
        "|" + "|".join([":--"] * 3 + ["--:"] * 3 + [":--"] * 2) + "|",
    ]
    lines += ["| " + " | ".join(text.replace("|", "\\|") for text in verdict_fields(item)) + " |" for item in verdicts]
    return "\n".join(lines) + "\n"


def render_csv(verdicts: Sequence[Verdict]) -> str:
    """One line per judged cell with numeric mean, std, seeds, paper, delta, verdict and run ids."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "table",
            "label",
            "column",
            "dataset",
            "extractor",
            "row",
            "flip",
            "mean",
            "std",
            "seeds",
            "paper",
            "delta",
            "verdict",
            "reason",
            "mlflow_runs",
        ]
    )
    for item in verdicts:
        cell = item.cell
        writer.writerow(
            [
                item.table,
                item.label,
                item.column,
                item.dataset,
                item.extractor,
                item.row,
                str(item.flip).lower(),
                "" if cell.mean is None else fmt(cell.mean),
                "" if cell.std is None else fmt(cell.std),
                f"{len(cell.values)}/{cell.expected}",
                fmt(cell.paper),
                "" if cell.delta is None else fmt(cell.delta, signed=True),
                item.verdict,
                item.reason,
                " ".join(item.runs),
            ]
        )
    return buffer.getvalue()


def render_latex(verdicts: Sequence[Verdict], tolerance: float) -> str:
    """A longtable-free booktabs table of the verdicts with counts and rule in the caption."""
    escape = latex_escape
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{Reproduction summary. {escape(counts_text(verdicts))} {escape(rule_text(tolerance))}}}",
        r"\label{tab:summary}",
        r"\begin{tabular}{lllrrrl}",
        r"\toprule",
        r"Table & Row & Column & Reproduced & Paper & $\Delta$ & Verdict \\",
        r"\midrule",
    ]
    lines += [" & ".join(escape(text) for text in verdict_fields(item)[:7]) + r" \\" for item in verdicts]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def run_ids(layout: Layout, key: RunKey) -> list[str]:
    """The MLflow run id recorded for one (dataset, extractor, row, seed): the head run, or the extractor's for baseline
    (none when tracking was off)."""
    marker = Path(layout.run_id(*key))
    return [marker.read_text(encoding="utf-8").strip()] if marker.is_file() else []


def write_summary(
    config: Mapping[str, Any], out_prefix: str | os.PathLike, layout: Layout | None = None
) -> list[Verdict]:
    """Judge every summarised table's cells and write `<out_prefix>.{md,csv,tex,html}`; return the verdicts."""
    layout = layout or Layout.of(config)
    settings = summary_config(config)
    names = summary_tables(config)
    if not names:
        raise HavanaError("config has no tables.table<N> entries to summarise; add the paper's tables to 'tables'.")
    seeds, active = config_seeds(config), active_datasets(config)
    models, runs = [], {}
    for name in names:
        spec = table_spec(config, name)
        keys = required_runs(spec, seeds, active)
        metrics = collect_metrics(layout, keys, "the reproduction summary")
        models.append(build_table(name, spec, metrics, seeds, active))
        for key in sorted(keys):
            found = runs.setdefault(key[:3], ())
            runs[key[:3]] = found + tuple(run for run in run_ids(layout, key) if run not in found)
    verdicts = judge(
        models, settings.tolerance, runs, lambda dataset, extractor: not_judged_reason(config, dataset, extractor)
    )
    rendered = {
        "md": render_markdown(verdicts, settings.tolerance),
        "csv": render_csv(verdicts),
        "tex": render_latex(verdicts, settings.tolerance),
        "html": html.render_summary(verdicts, settings.tolerance),
    }
    write_rendered(
        out_prefix,
        rendered,
        {
            "summary": settings,
            "tables": names,
            "seeds": seeds,
            "active_datasets": active,
            "results_dir": layout.results,
        },
    )
    return verdicts

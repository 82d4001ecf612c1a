"""The reproduction summary: for every table cell with a paper value, whether the reproduced value matches it.

Rule: a cell is reproduced when |mean − paper| ≤ max(std over seeds, tolerance), in percentage points, judged on the
seeds of the run; a cell on a dataset the run does not cover (active_datasets) is "not run". The tolerance and the
tables judged come from the config's top-level `summary` section.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from havana.config import from_mapping
from havana.errors import HavanaError
from havana.layout import Layout, active_datasets, seeds as config_seeds, summary_tables
from havana.report import tables
from havana.report.tables import Cell, TableModel

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"


@dataclass(frozen=True)
class SummaryConfig:
    tolerance: float = 0.5  # percentage points: a difference this small counts as reproduced even with zero spread
    tables: list[str] | None = None  # tables to judge; None: every tables.table<N>


@dataclass(frozen=True)
class Verdict:
    """One judged cell: where it is, its numbers, the verdict and the MLflow runs behind it."""

    table: str
    label: str
    column: str
    dataset: str
    extractor: str
    row: str
    flip: bool
    cell: Cell
    verdict: str
    runs: tuple[str, ...]


def verdict(cell: Cell, tolerance: float) -> str:
    """REPRODUCED when |mean − paper| ≤ max(std, tolerance), NOT_RUN (not run) without values, else NOT_REPRODUCED."""
    if cell.paper is None:
        raise ValueError("a cell without a paper value has no verdict")
    if cell.mean is None:
        return NOT_RUN
    return REPRODUCED if abs(cell.mean - cell.paper) <= max(cell.std, tolerance) + 1e-9 else NOT_REPRODUCED


def rule_text(tolerance: float) -> str:
    """The rule, stated in the output."""
    return (f"A cell is reproduced when |reproduced mean − paper| ≤ max(std over seeds, {tolerance:g}) percentage points, "
            "judged over the run's seeds; 'not run' marks a cell on a dataset outside active_datasets. "
            "Only cells with a paper value are judged.")


def summary_config(config: Mapping[str, Any]) -> SummaryConfig:
    """The config's `summary` section (optional) as a SummaryConfig."""
    return from_mapping(SummaryConfig, config.get("summary", {}) or {}, "summary")


def judge(models: Sequence[TableModel], tolerance: float,
          runs: Mapping[tuple[str, str, str], tuple[str, ...]] | None = None) -> list[Verdict]:
    """A verdict for every reproduced cell with a paper value across `models`, in table order."""
    runs = runs or {}
    verdicts = []
    for model in models:
        for row in model.rows:
            if row.spec is None:
                continue
            for column, cell in zip(model.columns, row.cells):
                if cell.paper is None:
                    continue
                dataset = column.dataset or row.spec.dataset or ""
                verdicts.append(Verdict(
                    table=model.name, label=row.label, column=tables.column_title(column) if column.dataset
                    else f"{tables.dataset_title(dataset)} {tables.METRIC_TITLES[column.metric]}",
                    dataset=dataset, extractor=row.spec.extractor, row=row.spec.row, flip=row.spec.flip, cell=cell,
                    verdict=verdict(cell, tolerance), runs=runs.get((dataset, row.spec.extractor, row.spec.row), ())))
    return verdicts


def counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """How many cells are reproduced, not reproduced and not run (and judged in all)."""
    result = {REPRODUCED: 0, NOT_REPRODUCED: 0, NOT_RUN: 0}
    for item in verdicts:
        result[item.verdict] += 1
    result["judged"] = len(verdicts)
    return result


def counts_text(verdicts: Sequence[Verdict]) -> str:
    tally = counts(verdicts)
    return (f"{tally['judged']} cells with a paper value: {tally[REPRODUCED]} reproduced, "
            f"{tally[NOT_REPRODUCED]} not reproduced, {tally[NOT_RUN]} not run.")


def verdict_fields(item: Verdict) -> list[str]:
    cell = item.cell
    return [item.table, item.label, item.column, tables.cell_text(cell), tables.paper_text(cell.paper),
            tables.delta_text(cell), item.verdict, ", ".join(item.runs) or "—"]


HEADINGS = ["Table", "Row", "Column", "Reproduced (mean ± std)", "Paper", "Δ", "Verdict", "MLflow runs"]


def render_markdown(verdicts: Sequence[Verdict], tolerance: float) -> str:
    """Counts and rule at the top, then one line per judged cell."""
    lines = ["# Reproduction summary", "", f"**{counts_text(verdicts)}**", "", rule_text(tolerance), "",
             "| " + " | ".join(HEADINGS) + " |", "|" + "|".join([":--"] * 3 + ["--:"] * 3 + [":--"] * 2) + "|"]
    lines += ["| " + " | ".join(text.replace("|", "\\|") for text in verdict_fields(item)) + " |" for item in verdicts]
    return "\n".join(lines) + "\n"


def render_csv(verdicts: Sequence[Verdict]) -> str:
    """One line per judged cell with numeric mean, std, seeds, paper, delta, verdict and run ids."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "label", "column", "dataset", "extractor", "row", "flip", "mean", "std", "seeds",
                     "paper", "delta", "verdict", "mlflow_runs"])
    for item in verdicts:
        cell = item.cell
        writer.writerow([item.table, item.label, item.column, item.dataset, item.extractor, item.row,
                         str(item.flip).lower(), "" if cell.mean is None else tables.fmt(cell.mean),
                         "" if cell.std is None else tables.fmt(cell.std), f"{len(cell.values)}/{cell.expected}",
                         tables.fmt(cell.paper), "" if cell.delta is None else tables.fmt(cell.delta, signed=True),
                         item.verdict, " ".join(item.runs)])
    return buffer.getvalue()


def render_latex(verdicts: Sequence[Verdict], tolerance: float) -> str:
    """A longtable-free booktabs table of the verdicts with counts and rule in the caption."""
    escape = tables.latex_escape
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{Reproduction summary. {escape(counts_text(verdicts))} {escape(rule_text(tolerance))}}}",
             r"\label{tab:summary}", r"\begin{tabular}{lllrrrl}", r"\toprule",
             r"Table & Row & Column & Reproduced & Paper & $\Delta$ & Verdict \\", r"\midrule"]
    lines += [" & ".join(escape(text) for text in verdict_fields(item)[:7]) + r" \\" for item in verdicts]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def run_ids(layout: Layout, key: tables.RunKey) -> list[str]:
    """The MLflow run id recorded for one (dataset, extractor, row, seed): the head run, or the extractor's for baseline
    (none when tracking was off)."""
    marker = Path(layout.run_id(*key))
    return [marker.read_text(encoding="utf-8").strip()] if marker.is_file() else []


def write_summary(config: Mapping[str, Any], out_prefix: str | os.PathLike,
                  layout: Layout | None = None) -> list[Verdict]:
    """Judge every summarised table's cells and write `<out_prefix>.{md,csv,tex,html}`; return the verdicts."""
    layout = layout or Layout.of(config)
    settings = summary_config(config)
    names = summary_tables(config)
    if not names:
        raise HavanaError("config has no tables.table<N> entries to summarise; add the paper's tables to 'tables'.")
    seeds, active = config_seeds(config), active_datasets(config)
    models, runs = [], {}
    for name in names:
        spec = tables.table_spec(config, name)
        keys = tables.required_runs(spec, seeds, active)
        metrics = tables.collect_metrics(layout, keys, "the reproduction summary")
        models.append(tables.build_table(name, spec, metrics, seeds, active))
        for key in sorted(keys):
            found = runs.setdefault(key[:3], ())
            runs[key[:3]] = found + tuple(run for run in run_ids(layout, key) if run not in found)
    verdicts = judge(models, settings.tolerance, runs)
    from havana.report import html  # it imports this module

    rendered = {"md": render_markdown(verdicts, settings.tolerance), "csv": render_csv(verdicts),
                "tex": render_latex(verdicts, settings.tolerance), "html": html.render_summary(verdicts, settings.tolerance)}
    tables.write_rendered(out_prefix, rendered, {"summary": settings, "tables": names, "seeds": seeds,
                                                 "active_datasets": active, "results_dir": layout.results})
    return verdicts

"""`havana runs --compare A B`: each table cell before (A) and after (B), the difference and its 95% interval.

A side is the metrics JSONs of one set of runs, {(dataset, extractor, row): {seed: metrics JSON}}: read from a
results folder (`folder_side`) or from the evaluation artifacts of MLflow runs (havana.report.runs.mlflow_side). Cells
present on both sides are paired (when each side holds a single row, as two config hashes of one edited row may not,
those two are paired), and the difference after − before gets the paired bootstrap interval of the tables
(havana.report.bootstrap: over queries and the seeds both sides have).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from havana.errors import HavanaError
from havana.layout import Layout, producer
from havana.report.bootstrap import cell_difference
from havana.report.model import fmt, interval_text, read_metrics, text_table

CellKey = tuple[str, str, str]  # (dataset, extractor, row)
Side = dict[CellKey, dict[int, Mapping[str, Any]]]
EVAL_PREFIX = "eval/"  # `havana evaluate` logs eval/<metric> and eval/flip_<metric>
HEADINGS = ["dataset", "extractor", "row", "metric", "before", "after", "Δ", "95% interval", "resolved"]


def folder_side(results: str | Path) -> Side:
    """Every metrics JSON under a results folder (its layout's metrics files), by cell and seed."""
    layout = Layout(results=str(results).rstrip("/"))
    side: Side = {}
    for path in sorted(Path(layout.results).glob("*/metrics/*/*/seed*.json")):
        kind, fields = producer(layout, str(path))
        if kind != "metrics" or not fields["seed"].isdigit():
            continue
        side.setdefault((fields["dataset"], fields["extractor"], fields["row"]), {})[int(fields["seed"])] = (
            read_metrics(path)
        )
    if not side:
        raise HavanaError(f"{results} holds no metrics files (<dataset>/metrics/<extractor>/<row>/seed<k>.json).")
    return side


def block_and_metric(name: str) -> tuple[str, str]:
    """'eval/flip_mAP' -> ("flip", "mAP"); 'eval/R1' or 'R1' -> ("plain", "R1")."""
    bare = name.removeprefix(EVAL_PREFIX)
    return ("flip", bare[5:]) if bare.startswith("flip_") else ("plain", bare)


def pairs(before: Side, after: Side) -> list[tuple[CellKey, CellKey]]:
    """The cells compared: those on both sides, or the single cell of each side when they share none."""
    common = [key for key in before if key in after]
    if common:
        return [(key, key) for key in common]
    if len(before) == 1 and len(after) == 1:
        return [(next(iter(before)), next(iter(after)))]
    raise HavanaError(
        "the two sides share no (dataset, extractor, row) and are not one row each, so nothing can be paired."
    )


def _mean(blocks: Mapping[int, Mapping[str, Any]], metric: str) -> float | None:
    values = [100.0 * float(b[metric]) for b in blocks.values() if isinstance(b.get(metric), (int, float))]
    return statistics.fmean(values) if values else None


def compare_lines(before: Side, after: Side, metrics: Sequence[str]) -> list[list[str]]:
    """One line per paired cell and metric: before and after (mean over seeds, percent), after − before and its
    95% interval over the seeds both sides have, and whether the interval excludes 0 (n/a without per-query scores,
    or for mINP)."""
    lines = []
    for key_before, key_after in pairs(before, after):
        row = key_after[2] if key_before == key_after else f"{key_before[2]} → {key_after[2]}"
        for name in metrics:
            block, metric = block_and_metric(name)
            earlier = {seed: payload.get(block) or {} for seed, payload in before[key_before].items()}
            later = {seed: payload.get(block) or {} for seed, payload in after[key_after].items()}
            difference = cell_difference(later, earlier, metric, f"{row} {name}")
            old, new = _mean(earlier, metric), _mean(later, metric)
            lines.append(
                [
                    *key_after[:2],
                    row,
                    name,
                    fmt(old),
                    fmt(new),
                    fmt(None if old is None or new is None else new - old, signed=True),
                    interval_text(difference),
                    "n/a" if difference is None else "yes" if difference.resolved else "no",
                ]
            )
    return lines


def render_compare(before: Side, after: Side, metrics: Sequence[str], names: tuple[str, str]) -> str:
    """The comparison as a fixed-width table under a line naming both sides."""
    return f"before: {names[0]}\nafter:  {names[1]}\n" + text_table(HEADINGS, compare_lines(before, after, metrics))

"""Paper tables rendered from the table model (havana.report.model): Markdown, CSV, LaTeX and HTML, written
atomically with provenance."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from havana.layout import Layout, active_datasets
from havana.layout import seeds as config_seeds
from havana.report import html
from havana.report.model import (
    TableModel,
    build_table,
    collect_metrics,
    column_title,
    dataset_title,
    display_name,
    fmt,
    not_judged_reason,
    required_runs,
    row_texts,
    single_view_extractors,
    sub_columns,
    summary_config,
    table_note,
    table_spec,
)
from havana.utils import atomic, provenance


def render_markdown(model: TableModel) -> str:
    """A Markdown table: per column three sub-columns (reproduced, paper, Δ), group headings, caption and note."""
    head = ["Method"] + (["Dataset"] if model.has_dataset_column else [])
    subs = sub_columns(model)
    for column in model.columns:
        title = column_title(column)
        head += [f"{title} (ours)", f"{title} (paper)", f"{title} Δ", f"{title} vs base"][: len(subs)]
    display = display_name(model.name)
    title = model.caption if model.caption.startswith(display) else f"{display}. {model.caption}"
    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(head) + " |",
        "|"
        + "|".join([":--"] * (len(head) - len(subs) * len(model.columns)) + ["--:"] * len(subs) * len(model.columns))
        + "|",
    ]
    group = None
    for row in model.rows:
        if row.group != group:
            group = row.group
            lines.append("| " + " | ".join([f"*{group}*"] + [""] * (len(head) - 1)) + " |")
        cells = [row.label] + ([dataset_title(row.dataset)] if model.has_dataset_column else [])
        cells += [f"**{text}**" if resolved else text for column in row_texts(model, row) for text, resolved in column]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += ["", f"*Note.* {model.note}", ""]
    return "\n".join(lines)


def render_csv(model: TableModel) -> str:
    """A wide CSV: one line per displayed row, per column mean, std, seeds found/expected, paper and delta; with base
    rows also the base row's label and per column the difference to it, its 95% interval and whether it is resolved."""
    base_fields = ("vs_base", "vs_base_low", "vs_base_high", "vs_base_resolved") if model.has_base else ()
    head = ["group", "method", "dataset", "extractor", "row", "flip"] + ["base"] * model.has_base
    for column in model.columns:
        prefix = f"{column.dataset}/{column.metric}" if column.dataset else column.metric
        head += [f"{prefix}/mean", f"{prefix}/std", f"{prefix}/seeds", f"{prefix}/paper", f"{prefix}/delta"]
        head += [f"{prefix}/{name}" for name in base_fields]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head)
    for row in model.rows:
        if row.spec is None:
            line = [row.group, row.label, "", "", "", ""] + [""] * model.has_base
            for value in row.reported:
                line += ["", "", "", "" if value is None else fmt(value), ""] + [""] * len(base_fields)
        else:
            line = [
                row.group,
                row.label,
                row.dataset or "",
                row.spec.extractor,
                row.spec.row,
                str(row.spec.flip).lower(),
            ] + [row.spec.base or ""] * model.has_base
            for index, cell in enumerate(row.cells):
                line += [
                    "" if cell.mean is None else fmt(cell.mean),
                    "" if cell.std is None else fmt(cell.std),
                    f"{len(cell.values)}/{cell.expected}",
                    "" if cell.paper is None else fmt(cell.paper),
                    "" if cell.delta is None else fmt(cell.delta, signed=True),
                ]
                difference = row.differences[index] if base_fields else None
                line += (
                    [
                        fmt(difference.estimate, signed=True),
                        fmt(difference.low, signed=True),
                        fmt(difference.high, signed=True),
                        str(difference.resolved).lower(),
                    ]
                    if difference is not None
                    else [""] * len(base_fields)
                )
        writer.writerow(line)
    return buffer.getvalue()


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "†": r"$^\dagger$",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "−": "-",
    "—": "--",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table cell (special characters escaped, dagger/± as math)."""
    return "".join(_LATEX_ESCAPES.get(char, char) for char in text)


def render_latex(model: TableModel) -> str:
    """A booktabs LaTeX table: column titles spanning (ours, paper, Δ[, vs base]) sub-columns, group headings, note
    below; a resolved difference to the base row in bold."""
    lead = 2 if model.has_dataset_column else 1
    subs = sub_columns(model)
    n = len(subs)
    width = lead + n * len(model.columns)
    spans = " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(column_title(c))}}}" for c in model.columns)
    rules = " ".join(rf"\cmidrule(lr){{{lead + n * i + 1}-{lead + n * i + n}}}" for i in range(len(model.columns)))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(model.caption)}}}",
        rf"\label{{tab:{model.name}}}",
        r"\begin{tabular}{" + "l" * lead + "r" * n * len(model.columns) + "}",
        r"\toprule",
        "Method" + (" & Dataset" if lead == 2 else "") + " & " + spans + r" \\",
        rules,
        " & " * (lead - 1)
        + " & "
        + " & ".join([r"Ours & Paper & $\Delta$" + r" & vs base" * model.has_base] * len(model.columns))
        + r" \\",
        r"\midrule",
    ]
    group = None
    for row in model.rows:
        if row.group != group:
            if group is not None:
                lines.append(r"\midrule")
            group = row.group
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{latex_escape(group)}}}}} \\")
        cells = [latex_escape(row.label)] + ([latex_escape(dataset_title(row.dataset))] if lead == 2 else [])
        cells += [
            rf"\textbf{{{latex_escape(text)}}}" if resolved else latex_escape(text)
            for column in row_texts(model, row)
            for text, resolved in column
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        "",
        rf"\par\footnotesize {latex_escape(model.note)}",
        r"\end{table}",
        "",
    ]
    return "\n".join(lines)


def write_rendered(out_prefix: str | os.PathLike, rendered: Mapping[str, str], provenance_config: Any) -> list[Path]:
    """Write `<prefix>.<ext>` for each rendering atomically, each with its provenance file; return the paths."""
    written = []
    for extension, text in rendered.items():
        path = Path(f"{os.fspath(out_prefix)}.{extension}")
        atomic.write_text(path, text)
        provenance.write_beside(path, provenance_config)
        written.append(path)
    return written


def write_table(
    config: Mapping[str, Any], name: str, out_prefix: str | os.PathLike, layout: Layout | None = None
) -> TableModel:
    """Read the table's metrics (through `layout`, default the config's) and write `<out_prefix>.{md,csv,tex,html}`."""
    layout = layout or Layout.of(config)
    spec = table_spec(config, name)
    seeds, active = config_seeds(config), active_datasets(config)
    metrics = collect_metrics(layout, required_runs(spec, seeds, active), f"table {name}")
    note = table_note(config, spec, seeds, active, single_view_extractors(metrics))
    model = build_table(name, spec, metrics, seeds, active, note)
    tolerance = summary_config(config).tolerance
    rendered = {
        "md": render_markdown(model),
        "csv": render_csv(model),
        "tex": render_latex(model),
        "html": html.render_table(
            model, tolerance, lambda dataset, extractor: not_judged_reason(config, dataset, extractor)
        ),
    }
    write_rendered(
        out_prefix,
        rendered,
        {"table": name, "spec": spec, "seeds": seeds, "active_datasets": active, "results_dir": layout.results},
    )
    return model

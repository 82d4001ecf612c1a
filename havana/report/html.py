"""Tables as self-contained HTML pages, for `snakemake --report` (which shows HTML inline; md/csv/tex stay downloads).

The paper's layout: per metric column the reproduced mean ± std, the paper's value and the difference, group headings,
caption and note. The difference is coloured by the reproduction summary's verdict (summary.tolerance):
green reproduced, red not reproduced, grey not run; cells without a paper value stay plain.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

from havana.data.datasets import dataset_title
from havana.report import model as table_model
from havana.report.model import TableModel

VERDICT_CLASSES = {
    table_model.REPRODUCED: "ok",
    table_model.NOT_REPRODUCED: "bad",
    table_model.INCONCLUSIVE: "unsure",
    table_model.NOT_JUDGED: "unjudged",
    table_model.NOT_RUN: "missing",
}
STYLE = """
div.havana { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 13px; margin: 12px;
             color: #222; }
div.havana caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0 8px; }
div.havana table.havana { border-collapse: collapse; }
div.havana table.havana th, div.havana table.havana td { padding: 3px 8px; border-bottom: 1px solid #ddd;
                                                         white-space: nowrap; }
div.havana table.havana thead th { border-bottom: 2px solid #444; text-align: center; }
div.havana table.havana td.num { text-align: right; font-variant-numeric: tabular-nums; }
div.havana table.havana td.paper { color: #555; }
div.havana table.havana tr.group td { font-style: italic; background: #f4f4f4; }
div.havana .ok { background: #d9f2d9; color: #1a6b1a; }
div.havana .bad { background: #f8d7d7; color: #9b1c1c; }
div.havana .missing { background: #eee; color: #777; }
div.havana .unsure { background: #fdf3d0; color: #7a5b00; }
div.havana .unjudged { color: #555; font-style: italic; }
div.havana .resolved { font-weight: 700; }
div.havana span.base { color: #777; font-size: 11px; }
div.havana p.note { max-width: 70em; color: #444; }
div.havana span.legend { padding: 1px 6px; margin-right: 6px; }
"""
LEGEND = (
    '<p class="note">Δ = reproduced − paper, in points: <span class="legend ok">reproduced</span>'
    '<span class="legend bad">not reproduced</span><span class="legend unsure">inconclusive</span>'
    '<span class="legend unjudged">not judged</span><span class="legend missing">not run</span> '
    "({rule})</p>"
)


def _page(title: str, body: str) -> str:
    """A page whose style reaches only its own <div class="havana">: the report's first page embeds these pages
    (workflow/report/workflow.rst) without restyling the report around them."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
        f'<body><div class="havana">\n<style>{STYLE}</style>\n{body}\n</div></body></html>\n'
    )


def _cell(text: str, classes: str = "num") -> str:
    return f'<td class="{classes}">{html.escape(text)}</td>'


def render_table(
    model: TableModel, tolerance: float, reasons: Callable[[str, str], str] = lambda dataset, extractor: ""
) -> str:
    """One paper table as an HTML page: two header rows (column titles spanning ours / paper / Δ), group rows."""
    lead = 2 if model.has_dataset_column else 1
    subs = table_model.sub_columns(model)
    top = '<th rowspan="2">Method</th>' + ('<th rowspan="2">Dataset</th>' if lead == 2 else "")
    top += "".join(f'<th colspan="{len(subs)}">{html.escape(table_model.column_title(c))}</th>' for c in model.columns)
    sub = "".join(f"<th>{html.escape(name)}</th>" for name in subs) * len(model.columns)
    rows, group, width = [], None, lead + len(subs) * len(model.columns)
    for row in model.rows:
        if row.group != group:
            group = row.group
            rows.append(f'<tr class="group"><td colspan="{width}">{html.escape(group)}</td></tr>')
        base = row.spec.base if row.spec is not None else None
        label = html.escape(row.label) + (f' <span class="base">vs {html.escape(base)}</span>' if base else "")
        cells = [f'<td class="label">{label}</td>']
        cells += [_cell(dataset_title(row.dataset), "label")] if lead == 2 else []
        for index, texts in enumerate(table_model.row_texts(model, row)):
            classes = ["num", "num paper", "num", "num"]
            if row.spec is not None:
                column, cell = model.columns[index], row.cells[index]
                reason = reasons(column.dataset or row.spec.dataset or "", row.spec.extractor)
                if cell.paper is not None:
                    classes[2] += " " + VERDICT_CLASSES[table_model.verdict(cell, tolerance, reason)]
            cells += [
                _cell(text, classes[position] + (" resolved" if resolved else ""))
                for position, (text, resolved) in enumerate(texts)
            ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    display = table_model.display_name(model.name)
    title = model.caption if model.caption.startswith(display) else f"{display}. {model.caption}"
    body = (
        f'<table class="havana" id="{html.escape(model.name)}"><caption>{html.escape(title)}</caption>\n'
        f"<thead><tr>{top}</tr><tr>{sub}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n"
        + LEGEND.format(rule=html.escape(table_model.rule_text(tolerance)))
        + f'\n<p class="note">{html.escape(model.note)}</p>'
    )
    return _page(title, body)


def render_summary(verdicts: Sequence[table_model.Verdict], tolerance: float) -> str:
    """The reproduction summary as an HTML page: counts and rule, then one row per judged cell, verdict coloured."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in table_model.HEADINGS)
    rows = []
    for item in verdicts:
        fields = table_model.verdict_fields(item)
        classes = ["label", "label", "label", "num", "num paper", "num", VERDICT_CLASSES[item.verdict], "label"]
        rows.append("<tr>" + "".join(_cell(text, cls) for text, cls in zip(fields, classes)) + "</tr>")
    body = (
        f'<table class="havana" id="summary"><caption>Reproduction summary: '
        f"{html.escape(table_model.counts_text(verdicts))}</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n"
        + f'<p class="note">{html.escape(table_model.rule_text(tolerance))}</p>'
    )
    return _page("Reproduction summary", body)

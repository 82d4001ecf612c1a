"""The paper's tables as a pure model, and the verdict rule that judges a cell against the paper.

A table is `<name>` in the config (columns, rows with the paper's values, optional literature rows). Each
reproduced cell is the mean ± sample std over the config's `seeds` of one metric, in percent, beside the paper's value
and the difference. The renderers (havana.report.tables, summary, html) sit above this module and read only it;
reading metrics JSON happens only in `collect_metrics`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from havana.config import from_mapping, section
from havana.data.datasets import dataset_title, is_synthetic
from havana.errors import HavanaError
from havana.layout import BASELINE, Layout, require
from havana.models.extractor_config import extractor_config
from havana.report.bootstrap import Difference, cell_difference

METRICS = ("mAP", "mINP", "R1", "R5", "R10")

METRIC_TITLES = {"mAP": "mAP", "mINP": "mINP", "R1": "R-1", "R5": "R-5", "R10": "R-10"}

REPRODUCED_GROUP = "Reproduced by this pipeline"

RunKey = tuple[str, str, str, int]  # (dataset, extractor, row, seed) of one metrics JSON


@dataclass(frozen=True)
class ColumnSpec:
    metric: str  # one of METRICS; read from the metrics JSON's "plain" or "flip" block
    dataset: str | None = None  # the dataset this column reads; None: each row's own dataset


@dataclass(frozen=True)
class RowSpec:
    label: str  # shown as-is (a dagger in the label marks flip test)
    extractor: str  # extractors.<name>
    row: str  # heads.rows.<name>, or "baseline" for raw extractor features
    dataset: str | None = None  # needed when a column names no dataset
    flip: bool = False  # True: the metrics JSON's "flip" block (flip-test features), else "plain"
    paper: list[float | None] = field(default_factory=list)  # the paper's value per column, null where none
    base: str | None = None  # the label of the row this one builds on: its cells show the difference to that row


@dataclass(frozen=True)
class LiteratureRow:
    label: str  # method and venue, as the paper prints it
    group: str  # e.g. "non-generative", "generative"; rows are shown under their group heading
    values: list[float | None]  # reported values per column, shown as reported and never as reproduced


@dataclass(frozen=True)
class TableSpec:
    caption: str  # what the table shows
    columns: list[ColumnSpec]  # one entry per numeric column
    rows: list[RowSpec]  # one displayed, reproduced row each
    literature: list[LiteratureRow] = field(default_factory=list)  # Table 2's reported rows


@dataclass(frozen=True)
class Cell:
    """One reproduced cell: the per-seed values found (percent), how many seeds were expected, the paper's value."""

    values: tuple[float, ...]
    expected: int
    paper: float | None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (ddof=1); 0 for a single seed, None for none."""
        if not self.values:
            return None
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def delta(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


@dataclass(frozen=True)
class TableRow:
    """A displayed row: a reproduced row (spec set, cells) or a literature row (reported values only)."""

    label: str
    group: str
    dataset: str | None
    spec: RowSpec | None
    cells: tuple[Cell, ...] = ()
    reported: tuple[float | None, ...] = ()
    differences: tuple[Difference | None, ...] = ()  # per column, to the row spec.base (None: no base, or no per-query
    # scores in its metrics, or mINP)


@dataclass(frozen=True)
class TableModel:
    """Everything a renderer needs: titles, column headings, rows grouped in display order, and the note."""

    name: str
    caption: str
    columns: tuple[ColumnSpec, ...]
    rows: tuple[TableRow, ...]
    note: str

    @property
    def has_dataset_column(self) -> bool:
        return any(column.dataset is None for column in self.columns)

    @property
    def has_base(self) -> bool:
        """Whether some row builds on another (then every renderer shows a 'vs base' sub-column)."""
        return any(row.spec is not None and row.spec.base is not None for row in self.rows)


def column_title(column: ColumnSpec) -> str:
    """'Market-1501 mAP', or just 'mAP' when the column takes each row's dataset."""
    metric = METRIC_TITLES[column.metric]
    return f"{dataset_title(column.dataset)} {metric}" if column.dataset else metric


def table_spec(config: Mapping[str, Any], name: str) -> TableSpec:
    """Parse and check `tables.<name>`: known metrics, one paper value per column, a dataset for every cell."""
    spec = from_mapping(TableSpec, section(config, "tables", name), f"tables.{name}")
    known_rows = set(config.get("heads", {}).get("rows", {}) or {}) | {BASELINE}
    width = len(spec.columns)
    for column in spec.columns:
        if column.metric not in METRICS:
            raise HavanaError(
                f"tables.{name} has a column with metric '{column.metric}'; use one of {', '.join(METRICS)}."
            )
    for row in spec.rows:
        where = f"tables.{name} row '{row.label}'"
        if row.paper and len(row.paper) != width:
            raise HavanaError(
                f"{where} has {len(row.paper)} paper values for {width} columns; give one per column (null where none)."
            )
        if row.row not in known_rows:
            raise HavanaError(
                f"{where} uses row '{row.row}', which is not in heads.rows; "
                f"add it or use one of {', '.join(sorted(known_rows))}."
            )
        if row.dataset is None and any(column.dataset is None for column in spec.columns):
            raise HavanaError(f"{where} names no dataset but some columns do not either; add 'dataset:' to the row.")
        if row.base is not None:
            base = next((other for other in spec.rows if other.label == row.base and other is not row), None)
            if base is None:
                raise HavanaError(
                    f"{where} builds on '{row.base}', which is not the label of another row of the table."
                )
            if any((column.dataset or row.dataset) != (column.dataset or base.dataset) for column in spec.columns):
                raise HavanaError(
                    f"{where} builds on '{row.base}', a row on another dataset; pair rows of one dataset."
                )
    for row in spec.literature:
        if len(row.values) != width:
            raise HavanaError(
                f"tables.{name} literature row '{row.label}' has {len(row.values)} values for {width} columns."
            )
    return spec


def cell_keys(spec: TableSpec, seeds: Sequence[int], active: Sequence[str]) -> list[list[list[RunKey]]]:
    """For each row and column, the metrics files (one per seed) its cell averages; none for an inactive dataset."""
    return [
        [
            [(column.dataset or row.dataset, row.extractor, row.row, seed) for seed in seeds]
            if (column.dataset or row.dataset) in active
            else []
            for column in spec.columns
        ]
        for row in spec.rows
    ]


def required_runs(spec: TableSpec, seeds: Sequence[int], active: Sequence[str]) -> set[RunKey]:
    """Every metrics file the table reads: each cell on an active dataset, each seed."""
    return {key for row in cell_keys(spec, seeds, active) for keys in row for key in keys}


def collect_metrics(layout: Layout, keys: set[RunKey], job: str) -> dict[RunKey, dict]:
    """Read the metrics JSON of every key; a missing one is a HavanaError naming it (job says who needed it)."""
    paths = {key: Path(layout.metrics(*key)) for key in sorted(keys)}
    require(paths.values(), job)
    return {key: read_metrics(path) for key, path in paths.items()}


def read_metrics(path: Path) -> dict:
    """One metrics JSON, checked (check_metrics); an unreadable one is a HavanaError saying what to do."""
    try:
        return check_metrics(path, json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HavanaError(
            f"metrics file {path} cannot be read ({exc.__class__.__name__}); delete it and rerun its evaluate job."
        ) from None


def check_metrics(path: Path, payload: Any) -> dict:
    """`payload` when every metric of its plain and flip blocks is a fraction in [0, 1] (NaN, strings and the
    percent scale are refused: a table must never show 2115.6 or nan as a reproduced value)."""
    if not isinstance(payload, dict):
        raise HavanaError(
            f"metrics file {path} holds a {type(payload).__name__}, not the mapping `havana evaluate` "
            "writes; delete it and rerun its evaluate job."
        )
    for block in ("plain", "flip"):
        values = payload.get(block)
        for metric in METRICS if isinstance(values, dict) else ():
            value = values.get(metric)
            if metric in values and not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and 0.0 <= value <= 1.0
            ):
                raise HavanaError(
                    f"metrics file {path} has {block}.{metric} = {value!r}, not a fraction in [0, 1] "
                    "(havana evaluate writes fractions, never percent); delete it and rerun its "
                    "evaluate job."
                )
    return payload


def metric_percent(metrics: Mapping[str, Any], key: RunKey, metric: str, flip: bool) -> float:
    """One metric of one metrics JSON, in percent, from its "flip" or "plain" block."""
    block_name = "flip" if flip else "plain"
    try:
        value = metrics[block_name][metric]
    except (KeyError, TypeError):
        raise HavanaError(
            f"metrics for {key} have no {block_name}.{metric}; rerun its evaluate job with the current code."
        ) from None
    return 100.0 * float(value)


def build_table(
    name: str,
    spec: TableSpec,
    metrics: Mapping[RunKey, Mapping[str, Any]],
    seeds: Sequence[int],
    active: Sequence[str],
    note: str = "",
) -> TableModel:
    """The table model: literature rows by group (as reported), then reproduced cells (none on inactive datasets)."""
    rows: list[TableRow] = []
    groups: list[str] = []
    for lit in spec.literature:
        if lit.group not in groups:
            groups.append(lit.group)
    for group in groups:
        rows.extend(
            TableRow(label=lit.label, group=group, dataset=None, spec=None, reported=tuple(lit.values))
            for lit in spec.literature
            if lit.group == group
        )
    all_keys = cell_keys(spec, seeds, active)
    by_label = {row.label: (row, keys) for row, keys in zip(spec.rows, all_keys)}
    for row, row_keys in zip(spec.rows, all_keys):
        base, base_keys = by_label.get(row.base, (None, None))  # (None, None): the row builds on none
        cells, differences = [], []
        for index, (column, keys) in enumerate(zip(spec.columns, row_keys)):
            values = tuple(metric_percent(metrics[key], key, column.metric, row.flip) for key in keys)
            paper = row.paper[index] if row.paper else None
            cells.append(Cell(values=values, expected=len(seeds), paper=paper))
            differences.append(
                None
                if base is None or not keys
                else cell_difference(
                    _blocks(metrics, keys, row.flip),
                    _blocks(metrics, base_keys[index], base.flip),
                    column.metric,
                    f"{display_name(name)} '{row.label}' vs '{base.label}'",
                )
            )
        rows.append(
            TableRow(
                label=row.label,
                group=REPRODUCED_GROUP,
                dataset=row.dataset,
                spec=row,
                cells=tuple(cells),
                differences=tuple(differences),
            )
        )
    return TableModel(name=name, caption=spec.caption, columns=tuple(spec.columns), rows=tuple(rows), note=note)


def _blocks(metrics: Mapping[RunKey, Mapping[str, Any]], keys: Sequence[RunKey], flip: bool) -> dict[int, Any]:
    """The "flip" or "plain" block of each seed's metrics JSON of one cell, by seed."""
    return {key[3]: metrics[key].get("flip" if flip else "plain") or {} for key in keys}


def single_view_extractors(metrics: Mapping[RunKey, dict]) -> list[str]:
    """The extractors whose heads (in these metrics) were trained on one train view per image: their feature file's
    `views` attribute, as `havana evaluate` records it in the metrics' provenance. Such heads saw no augmentation."""
    found = []
    for (_, extractor, row, _), payload in sorted(metrics.items()):
        attrs = ((payload.get("provenance") or {}).get("config") or {}).get("attrs") or {}
        if row != BASELINE and attrs.get("views") == 1:
            found.append(extractor)
    return list(dict.fromkeys(found))


def _extractor_text(config: Mapping[str, Any], name: str) -> str:
    """One extractor in a table note: its training epochs, or where its model or features were imported from."""
    entry = extractor_config(dict(config), name)
    if entry.features is not None:
        return f"{name} (features imported from {entry.features})"
    if entry.import_ is not None:
        return f"{name} (imported {entry.import_.format} checkpoint, not trained here)"
    return f"{name} ({entry.train.epochs} epochs)"


def table_note(
    config: Mapping[str, Any],
    spec: TableSpec,
    seeds: Sequence[int],
    active: Sequence[str],
    single_view: Sequence[str] = (),
) -> str:
    """What was run for this table: datasets, extractors (with epochs or their import), head rows, head epochs, seeds,
    flip test, and which extractors' heads saw no augmentation (`single_view`: one train view per image)."""
    named = {c.dataset for c in spec.columns if c.dataset} | {r.dataset for r in spec.rows if r.dataset}
    datasets = sorted(named & set(active))
    skipped = sorted(named - set(active))
    extractors = list(dict.fromkeys(row.extractor for row in spec.rows))
    heads = list(dict.fromkeys(row.row for row in spec.rows))
    extractor_text = ", ".join(_extractor_text(config, name) for name in extractors)
    head_epochs = ((config.get("heads", {}) or {}).get("train", {}) or {}).get("epochs")
    head_rows = [h for h in heads if h != BASELINE]
    flipped = [row.label for row in spec.rows if row.flip]
    parts = [
        f"Reproduced on {', '.join(dataset_title(d) for d in datasets) or 'no dataset'}"
        + (
            f" (not run here: {', '.join(dataset_title(d) for d in skipped)}, not in active_datasets)"
            if skipped
            else ""
        ),
        f"extractor(s) {extractor_text or 'none'}",
        "head rows "
        + (", ".join(head_rows) if head_rows else "none")
        + (
            (
                f" ({head_epochs} epochs each)"
                if head_epochs is not None
                else " (epochs: the head trainer's default; heads.train.epochs not set)"
            )
            if head_rows
            else ""
        )
        + ("; baseline = raw extractor features, no head" if BASELINE in heads else ""),
        f"seeds {', '.join(str(s) for s in seeds)} (n={len(seeds)})",
        "flip test (plain and flipped features averaged) on " + (", ".join(flipped) if flipped else "no row"),
    ]
    if single_view:
        parts.append(
            f"heads on {', '.join(single_view)} saw no augmentation (one train view per image in the feature file)"
        )
    legend = (
        "Per column: reproduced mean ± sample std over seeds (percent), the paper's value, and the "
        "difference reproduced − paper; n/a: a dataset this run does not cover (active_datasets); "
        "— : the paper gives no value."
    )
    literature = " Literature rows are the values reported in the paper, not reproduced." if spec.literature else ""
    pairs = [f"{row.label} − {row.base}" for row in spec.rows if row.base is not None]
    base = (
        " vs base: the row minus the row it builds on ("
        + "; ".join(pairs)
        + f") with its {BASE_LEVEL_TEXT} (bold: resolved, the interval excludes 0; n/a: no per-query "
        "scores kept, or mINP)."
        if pairs
        else ""
    )
    return "; ".join(parts) + "." + literature + " " + legend + base


BASE_LEVEL_TEXT = "95% interval from a paired bootstrap over queries and seeds (havana.report.bootstrap)"


def text_table(head: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """Rows of text cells as a fixed-width plain-text table: the headings, a rule, one line per row (columns as wide
    as their widest cell, two spaces apart, trailing spaces dropped)."""
    widths = [max(len(text) for text in column) for column in zip(head, *lines)]
    render = lambda cells: "  ".join(text.ljust(width) for text, width in zip(cells, widths)).rstrip()
    return "\n".join([render(head), "  ".join("-" * width for width in widths), *map(render, lines)]) + "\n"


def fmt(value: float | None, signed: bool = False) -> str:
    """Percent with one decimal ('n/a' for None); `signed` adds + and never prints -0.0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = round(value, 1) + 0.0
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def cell_text(cell: Cell) -> str:
    """'86.5 ± 0.3', with '(k/n seeds)' when seeds are missing, or 'n/a' when none exist."""
    if cell.mean is None:
        return "n/a"
    text = f"{fmt(cell.mean)} ± {fmt(cell.std)}"
    return text if len(cell.values) >= cell.expected else f"{text} ({len(cell.values)}/{cell.expected} seeds)"


def paper_text(value: float | None) -> str:
    return "—" if value is None else fmt(value)


def delta_text(cell: Cell) -> str:
    if cell.paper is None:
        return "—"
    return fmt(cell.delta, signed=True)


def interval_text(difference: Difference | None) -> str:
    """'[+0.2, +1.1]': the 95% interval of a difference, in points; 'n/a' without one."""
    if difference is None:
        return "n/a"
    return f"[{fmt(difference.low, signed=True)}, {fmt(difference.high, signed=True)}]"


def difference_text(difference: Difference | None) -> str:
    """'+0.7 [+0.2, +1.1]': a difference to the base row with its 95% interval, in points; 'n/a' without one."""
    if difference is None:
        return "n/a"
    return f"{fmt(difference.estimate, signed=True)} {interval_text(difference)}"


SUB_COLUMNS = ("ours", "paper", "Δ")
BASE_SUB_COLUMN = "vs base"  # a fourth sub-column when some row builds on another


def sub_columns(model: TableModel) -> tuple[str, ...]:
    """The sub-columns under each column title."""
    return (*SUB_COLUMNS, BASE_SUB_COLUMN) if model.has_base else SUB_COLUMNS


def row_texts(model: TableModel, row: TableRow) -> list[list[tuple[str, bool]]]:
    """Per column of one row, (text, resolved) of each sub-column: reproduced, paper, delta and, when the table has
    base rows, the difference to the base row (resolved: its interval excludes 0); literature rows fill only the
    paper slot."""
    with_base = model.has_base
    if row.spec is None:
        return [
            [("", False), (paper_text(value), False), ("", False)] + [("", False)] * with_base for value in row.reported
        ]
    texts = []
    for index, cell in enumerate(row.cells):
        column = [(cell_text(cell), False), (paper_text(cell.paper), False), (delta_text(cell), False)]
        if with_base:
            difference = row.differences[index] if row.spec.base is not None else None
            shown = difference_text(difference) if row.spec.base is not None else ""
            column.append((shown, difference is not None and difference.resolved))
        texts.append(column)
    return texts


def display_name(name: str) -> str:
    """'table3' -> 'Table 3'."""
    return f"Table {name[5:]}" if name.startswith("table") and name[5:].isdigit() else name.capitalize()


# ---------------------------------------------------------------- the verdict rule

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
NOT_JUDGED, NOT_RUN = "not judged", "not run"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_JUDGED, NOT_RUN)
PAPER_ARCH = "resnet50"  # the paper's tables report HAVANA on BoT ResNet-50 features (§4.1, Tables 2-6)
# One-sided 95% quantiles of Student's t for 1 … 30 degrees of freedom (scipy.stats.t.ppf(0.95, df); tested), the
# half-width factor of the 90% interval of a mean over seeds; beyond 30 the normal quantile.
T95 = (6.3138, 2.9200, 2.3534, 2.1318, 2.0150, 1.9432, 1.8946, 1.8595, 1.8331, 1.8125, 1.7959, 1.7823, 1.7709, 1.7613,
       1.7531, 1.7459, 1.7396, 1.7341, 1.7291, 1.7247, 1.7207, 1.7171, 1.7139, 1.7109, 1.7081, 1.7056, 1.7033, 1.7011,
       1.6991, 1.6973)  # fmt: skip
Z95 = 1.6449


@dataclass(frozen=True)
class SummaryConfig:
    tolerance: float = 1.0  # percentage points: the equivalence margin around the paper's value (BoT's authors report
    # run-to-run moves of up to 1%)
    tables: list[str] | None = None  # tables to judge; None: every tables.table<N>


@dataclass(frozen=True)
class Verdict:
    """One cell with a paper value: where it is, its numbers, the verdict (and why it is not judged) and the MLflow
    runs behind it."""

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
    reason: str = ""  # why a cell is not judged


def not_judged_reason(config: Mapping[str, Any], dataset: str, extractor: str) -> str:
    """Why the paper's value cannot be compared with a cell on (dataset, extractor), or "" when it can: the paper
    measured its datasets with BoT ResNet-50 features, so a synthetic dataset or another backbone is no test of it."""
    if is_synthetic(dataset):
        return "synthetic dataset: shape check only, not comparable with the paper's numbers"
    arch = extractor_config(dict(config), extractor).arch
    if arch != PAPER_ARCH:
        return f"extractor {extractor} is {arch}; the paper's values are for BoT ResNet-50"
    return ""


def mean_interval(cell: Cell) -> tuple[float, float] | None:
    """The 90% t-interval of the cell's mean over seeds, None with fewer than two seeds (no spread estimate)."""
    n = len(cell.values)
    if n < 2 or cell.mean is None:
        return None
    half = (T95[n - 2] if n - 1 <= len(T95) else Z95) * cell.std / math.sqrt(n)
    return cell.mean - half, cell.mean + half


def verdict(cell: Cell, tolerance: float, reason: str = "") -> str:
    """The equivalence rule (two one-sided tests at 5%): REPRODUCED when the 90% t-interval of the mean over seeds
    lies inside paper ± tolerance, NOT_REPRODUCED when it lies wholly outside, INCONCLUSIVE otherwise (more seeds
    needed; always with one seed); NOT_JUDGED with a `reason`, NOT_RUN without values. Noise makes a pass harder, not
    easier, and a cell whose true mean is `tolerance` or more from the paper passes with probability at most 5%."""
    if cell.paper is None:
        raise ValueError("a cell without a paper value has no verdict")
    if cell.mean is None:
        return NOT_RUN
    if reason:
        return NOT_JUDGED
    interval = mean_interval(cell)
    if interval is None:
        return INCONCLUSIVE
    low, high = interval
    if cell.paper - tolerance <= low and high <= cell.paper + tolerance:
        return REPRODUCED
    if high < cell.paper - tolerance or low > cell.paper + tolerance:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def rule_text(tolerance: float) -> str:
    """The rule, stated in the output."""
    return (
        f"A cell is reproduced when the 90% t-interval of its mean over seeds lies inside paper ± {tolerance:g} "
        "percentage points (two one-sided tests at 5%: a cell whose true mean is that far from the paper passes at "
        "most 5% of the time), not reproduced when the interval lies wholly outside, inconclusive otherwise (more "
        "seeds needed; always with one seed). Only cells on the paper's datasets with a BoT ResNet-50 extractor are "
        "judged: others (e.g. the synthetic demo) are 'not judged', with the reason; 'not run' marks a cell on a "
        "dataset outside active_datasets."
    )


def summary_config(config: Mapping[str, Any]) -> SummaryConfig:
    """The config's `summary` section (optional) as a SummaryConfig."""
    return from_mapping(SummaryConfig, config.get("summary", {}) or {}, "summary")


def judge(
    models: Sequence[TableModel],
    tolerance: float,
    runs: Mapping[tuple[str, str, str], tuple[str, ...]] | None = None,
    reasons: Callable[[str, str], str] = lambda dataset, extractor: "",
) -> list[Verdict]:
    """A verdict for every reproduced cell with a paper value across `models`, in table order; `reasons(dataset,
    extractor)` says why a cell is not judged (not_judged_reason with the config)."""
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
                reason = reasons(dataset, row.spec.extractor)
                verdicts.append(
                    Verdict(
                        table=model.name,
                        label=row.label,
                        column=column_title(column)
                        if column.dataset
                        else f"{dataset_title(dataset)} {METRIC_TITLES[column.metric]}",
                        dataset=dataset,
                        extractor=row.spec.extractor,
                        row=row.spec.row,
                        flip=row.spec.flip,
                        cell=cell,
                        verdict=verdict(cell, tolerance, reason),
                        runs=runs.get((dataset, row.spec.extractor, row.spec.row), ()),
                        reason=reason,
                    )
                )
    return verdicts


def counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """How many cells got each verdict (and how many have a paper value in all)."""
    result = dict.fromkeys(VERDICTS, 0)
    for item in verdicts:
        result[item.verdict] += 1
    result["with paper value"] = len(verdicts)
    return result


def counts_text(verdicts: Sequence[Verdict]) -> str:
    tally = counts(verdicts)
    text = (
        f"{tally['with paper value']} cells with a paper value: {tally[REPRODUCED]} reproduced, "
        f"{tally[NOT_REPRODUCED]} not reproduced, {tally[INCONCLUSIVE]} inconclusive, "
        f"{tally[NOT_JUDGED]} not judged, {tally[NOT_RUN]} not run."
    )
    reasons = sorted({item.reason for item in verdicts if item.verdict == NOT_JUDGED})
    return text + (f" Not judged: {'; '.join(reasons)}." if reasons else "")


def verdict_fields(item: Verdict) -> list[str]:
    cell = item.cell
    return [
        item.table,
        item.label,
        item.column,
        cell_text(cell),
        paper_text(cell.paper),
        delta_text(cell),
        f"{item.verdict} ({item.reason})" if item.reason else item.verdict,
        ", ".join(item.runs) or "—",
    ]


HEADINGS = ["Table", "Row", "Column", "Reproduced (mean ± std)", "Paper", "Δ", "Verdict", "MLflow runs"]

"""The ablation comparison from the MLflow store, for a terminal: table rows × seeds with switches and metrics.

Every head run (and every baseline evaluation run) carries the tags dataset, extractor, row, seed and table_cells,
its row's switches as `row.*` params and its evaluation metrics; `read_runs` takes them from the store and
`render_comparison` prints one line per run and a mean ± std line per row: what `havana runs` shows.

The MLflow UI (3.x) shows no metric or parameter column until a user picks them, so `save_view` also stores the same
comparison as a saved view of the runs table - MLflow's own shared-view experiment tag, opened by the URL's
`viewStateShareKey` - filtered to the table's runs, with the row, seed and extractor tags, the row params that differ
between those runs and the metrics as columns.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from havana.errors import HavanaError

DEFAULT_METRICS = ("mAP", "R1", "mINP", "flip_mAP", "flip_R1")
VIEW_TAG = "mlflow.sharedViewState."  # + the key: the experiment tag the UI reads a shared view from
RUNS_PAGE = "#/experiments/{id}/runs?viewStateShareKey={key}&workflowType=machine_learning"
WEIGHTS = (("alpha", "α"), ("beta", "β"), ("gamma", "γ"), ("lam", "λ"))


@dataclass(frozen=True)
class RunRecord:
    """What the comparison shows of one run."""

    run_id: str
    name: str
    dataset: str
    extractor: str
    row: str
    seed: str
    table_cells: str
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def switches(self) -> str:
        """'cls+jst+reconx+klz C': the loss terms a head row switches on (C: covariance constraint); '—' without."""
        on = [
            key[4:]
            for key, value in self.params.items()
            if key.startswith("row.") and value == "True" and key != "row.constraint"
        ]
        if not on:
            return "—"
        return "+".join(on) + (" C" if self.params.get("row.constraint") == "True" else "")

    @property
    def weights(self) -> str:
        """'α=0.2 β=1.0 γ=0.5 λ=1.0' from the row's params ('' for the baseline)."""
        return " ".join(
            f"{symbol}={self.params[f'row.{key}']}" for key, symbol in WEIGHTS if f"row.{key}" in self.params
        )


def read_runs(tracking_uri: str, experiment: str, table: str | None = None) -> list[RunRecord]:
    """The runs of `experiment` tagged with a table row (heads and baselines), those feeding `table` if given."""
    from mlflow.tracking import MlflowClient

    from havana.utils.tracking import CELL_SEPARATOR, _sqlite_file, with_retries

    database = _sqlite_file(tracking_uri)
    if database is not None and not database.is_file():
        raise HavanaError(
            f"there is no MLflow store at {database}; pass the tracking_uri the pipeline wrote to "
            "(config tracking_uri, e.g. sqlite:///results/mlflow.db)."
        )
    client = MlflowClient(tracking_uri=tracking_uri)
    found = with_retries(lambda: client.get_experiment_by_name(experiment))
    if found is None:
        names = [e.name for e in with_retries(lambda: client.search_experiments())]
        raise HavanaError(
            f"the MLflow store {tracking_uri} has no experiment '{experiment}' (it has: "
            f"{', '.join(names) or 'none'}); pass --experiment with a dataset name."
        )
    runs, token = [], None
    while True:
        page = with_retries(lambda: client.search_runs([found.experiment_id], max_results=1000, page_token=token))
        runs.extend(page)
        token = page.token
        if not token:
            break
    records = [
        RunRecord(
            run_id=run.info.run_id,
            name=run.info.run_name or "",
            dataset=run.data.tags.get("dataset", ""),
            extractor=run.data.tags.get("extractor", ""),
            row=run.data.tags["row"],
            seed=run.data.tags.get("seed", ""),
            table_cells=run.data.tags.get("table_cells", ""),
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
        )
        for run in runs
        if run.info.lifecycle_stage == "active" and "row" in run.data.tags
    ]
    if table is not None:
        records = [
            r for r in records if any(cell.split(":", 1)[0] == table for cell in r.table_cells.split(CELL_SEPARATOR))
        ]
    return sorted(records, key=lambda r: (r.dataset, r.extractor, r.row != "baseline", r.row, _seed_key(r.seed)))


def view_state(records: Sequence[RunRecord], table: str | None, metrics: Sequence[str]) -> dict[str, object]:
    """The runs-table state that shows `records` as `render_comparison` does: a filter selecting exactly the runs of
    `table` (all tagged runs without one), sorted by row, and as columns the tags row, seed and extractor, the row
    params whose values differ between the head runs, and `metrics`."""
    varying = sorted(
        {
            key
            for record in records
            for key in record.params
            if key.startswith("row.") and len({r.params[key] for r in records if key in r.params}) > 1
        }
    )
    return {
        "searchFilter": f"tags.table_cells LIKE '%{table}:%'" if table else "tags.row LIKE '%'",
        "orderByKey": "tags.`row`",
        "orderByAsc": True,
        "selectedColumns": [
            *(f"tags.`{tag}`" for tag in ("row", "seed", "extractor")),
            *(f"params.`{key}`" for key in varying),
            *(f"metrics.`{m}`" for m in metrics),
        ],
    }


def save_view(
    tracking_uri: str, experiment: str, table: str | None, records: Sequence[RunRecord], metrics: Sequence[str]
) -> str:
    """Store `view_state` as the experiment's saved view 'havana-<table>' (or 'havana-all') and return the part of
    the UI's URL after the host that opens it."""
    from mlflow.tracking import MlflowClient

    from havana.utils.tracking import with_retries

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = with_retries(lambda: client.get_experiment_by_name(experiment)).experiment_id
    key = f"havana-{table or 'all'}"
    state = json.dumps(view_state(records, table, metrics))
    with_retries(lambda: client.set_experiment_tag(experiment_id, VIEW_TAG + key, state))
    return RUNS_PAGE.format(id=experiment_id, key=key)


def _seed_key(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.isdigit() else (1 << 30, seed)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def render_comparison(records: Sequence[RunRecord], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """A fixed-width table: one line per run (row, seed, extractor, switches, weights, metrics in percent), and after
    each row's seeds a 'mean ± std' line; metrics absent from a run show n/a."""
    head = ["row", "seed", "extractor", "switches", "weights", *metrics]
    lines: list[list[str]] = []
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.dataset, record.extractor, record.row), []).append(record)
    for (_, extractor, row), members in groups.items():
        for record in members:
            lines.append(
                [
                    row,
                    record.seed,
                    extractor,
                    record.switches,
                    record.weights,
                    *(_percent(record.metrics.get(m)) for m in metrics),
                ]
            )
        if len(members) > 1:
            summary = []
            for metric in metrics:
                values = [100 * r.metrics[metric] for r in members if metric in r.metrics]
                summary.append(
                    "n/a"
                    if not values
                    else f"{statistics.fmean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"
                )
            lines.append([row, f"mean of {len(members)}", "", "", "", *summary])
    widths = [max(len(text) for text in column) for column in zip(head, *lines)]
    rule = "  ".join("-" * width for width in widths)
    render = lambda cells: "  ".join(text.ljust(width) for text, width in zip(cells, widths)).rstrip()
    return "\n".join([render(head), rule, *map(render, lines)]) + "\n"

"""The ablation comparison from the MLflow store, for a terminal: table rows × seeds with switches and metrics.

Every head run (and every baseline evaluation run) carries the tags dataset, extractor, row, seed, table_cells,
label.<table> and config_hash (its resolved job config without the seed), its row's switches as `row.*` params and its
evaluation metrics (eval/…); `read_runs` takes them from the store, `select_configurations` keeps one configuration per
row (the newest with every seed, unless told otherwise) and says which rows have runs of several, and
`render_comparison` prints one line per run and a mean ± std line per configuration: what `havana runs` shows.

The MLflow UI (3.x) shows no metric or parameter column until a user picks them, so `save_view` also stores the same
comparison as a saved view of the runs table - MLflow's own shared-view experiment tag, opened by the URL's
`viewStateShareKey` - filtered to the runs shown, grouped by the table's row labels, with the label, row,
configuration, seed and extractor tags, the row params that differ between those runs and the metrics as columns.
MLflow shows metrics as logged (fractions): its runs table has no unit or scale setting, so the view cannot show
percent.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from havana.errors import HavanaError
from havana.report.model import text_table

DEFAULT_METRICS = ("eval/mAP", "eval/R1", "eval/mINP", "eval/flip_mAP", "eval/flip_R1")  # as `havana evaluate` logs
SHORT_HASH = 8  # characters of a config hash shown and accepted as a prefix
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
    config_hash: str = ""  # the config_hash tag ('' on runs logged before it existed)
    started: int = 0  # start time, ms since the epoch
    git_sha: str = ""

    def label(self, table: str | None) -> str:
        """The row's label in `table` as the paper prints it (from table_cells), else the row key."""
        from havana.utils.tracking import CELL_SEPARATOR

        for cell in self.table_cells.split(CELL_SEPARATOR) if table else ():
            name, _, label = cell.partition(":")
            if name == table:
                return label
        return self.row

    @property
    def configuration(self) -> tuple[str, str, str, str]:
        """(dataset, extractor, row, config hash): the runs of one configuration, its seeds."""
        return (self.dataset, self.extractor, self.row, self.config_hash)

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

    from havana.utils.tracking import CELL_SEPARATOR, CONFIG_HASH_TAG, _sqlite_file, with_retries

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
            config_hash=run.data.tags.get(CONFIG_HASH_TAG, ""),
            started=run.info.start_time or 0,
            git_sha=run.data.tags.get("git_sha", ""),
        )
        for run in runs
        if run.info.lifecycle_stage == "active" and "row" in run.data.tags
    ]
    if table is not None:
        records = [
            r for r in records if any(cell.split(":", 1)[0] == table for cell in r.table_cells.split(CELL_SEPARATOR))
        ]
    return _ordered(records)


@dataclass(frozen=True)
class Selection:
    """The runs to show and, per row with runs of several configurations, a sentence saying which one is shown."""

    records: list[RunRecord]
    notes: list[str]


def select_configurations(
    records: Sequence[RunRecord],
    config_hash: str | None = None,
    all_configurations: bool = False,
    table: str | None = None,
) -> Selection:
    """Per (dataset, extractor, row): the runs of one configuration - the one whose hash starts with `config_hash`
    where the row has it, else the newest complete one (a run for every seed any of the row's configurations has),
    else the newest - or every configuration with `all_configurations`; a note for each row with several, naming it
    by its label in `table`."""
    rows: dict[tuple[str, str, str], dict[str, list[RunRecord]]] = {}
    for record in records:
        rows.setdefault(record.configuration[:3], {}).setdefault(record.config_hash, []).append(record)
    chosen, notes = [], []
    for (_, extractor, _), configurations in rows.items():
        row = next(iter(configurations.values()))[0].label(table)
        if len(configurations) == 1 or all_configurations:
            chosen.extend(r for members in configurations.values() for r in members)
            if len(configurations) > 1:
                notes.append(f"{row} ({extractor}): runs of {len(configurations)} configurations, all shown.")
            continue
        seeds = {r.seed for members in configurations.values() for r in members}
        newest_first = sorted(configurations, key=lambda h: -max(r.started for r in configurations[h]))
        complete = [h for h in newest_first if {r.seed for r in configurations[h]} >= seeds]
        picked = [h for h in newest_first if config_hash and h.startswith(config_hash)]
        pick = (picked or complete or newest_first)[0]
        why = "chosen by --config-hash" if picked else "the newest complete set" if complete else "the newest"
        chosen.extend(configurations[pick])
        others = ", ".join(
            f"{_short(h)} ({len(configurations[h])} run{'s' * (len(configurations[h]) > 1)})"
            for h in newest_first
            if h != pick
        )
        notes.append(
            f"{row} ({extractor}): runs of {len(configurations)} configurations; shown: {_short(pick)} ({why}); "
            f"also: {others} (--config-hash HASH to choose, --all-configs to show all)."
        )
    return Selection(_ordered(chosen), notes)


def _short(config_hash: str) -> str:
    return config_hash[:SHORT_HASH] or "untagged"


def _ordered(records: Sequence[RunRecord]) -> list[RunRecord]:
    """By dataset, extractor, row (baseline first), configuration (newest first), seed."""
    newest: dict[tuple[str, str, str, str], int] = {}
    for r in records:
        newest[r.configuration] = max(newest.get(r.configuration, 0), r.started)
    return sorted(
        records,
        key=lambda r: (
            r.dataset,
            r.extractor,
            r.row != "baseline",
            r.row,
            -newest[r.configuration],
            r.config_hash,
            _seed_key(r.seed),
        ),
    )


def view_state(
    records: Sequence[RunRecord], table: str | None, metrics: Sequence[str], narrowed: bool = False
) -> dict[str, object]:
    """The runs-table state that shows `records` as `render_comparison` does: a filter selecting exactly them (the
    runs of `table`, all tagged runs without one, and only these run ids when `narrowed`: some runs of the table were
    left out, e.g. another configuration of a row), grouped by the table's row labels (label.<table>; the row key
    without a table), sorted by row, and as columns the label, row, config_hash, seed and extractor tags, the row
    params whose values differ between the head runs, and `metrics`."""
    from havana.utils.tracking import CONFIG_HASH_TAG, LABEL_TAG

    varying = sorted(
        {
            key
            for record in records
            for key in record.params
            if key.startswith("row.") and len({r.params[key] for r in records if key in r.params}) > 1
        }
    )
    search = f"tags.table_cells LIKE '%{table}:%'" if table else "tags.row LIKE '%'"
    if narrowed:
        search += " AND attributes.run_id IN (" + ", ".join(f"'{r.run_id}'" for r in records) + ")"
    group = f"{LABEL_TAG}{table}" if table else "row"
    return {
        "searchFilter": search,
        "orderByKey": "tags.`row`",
        "orderByAsc": True,
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": group}]},
        "selectedColumns": [
            *(f"tags.`{tag}`" for tag in ([group] if table else []) + ["row", CONFIG_HASH_TAG, "seed", "extractor"]),
            *(f"params.`{key}`" for key in varying),
            *(f"metrics.`{m}`" for m in metrics),
        ],
    }


def save_view(
    tracking_uri: str,
    experiment: str,
    table: str | None,
    records: Sequence[RunRecord],
    metrics: Sequence[str],
    narrowed: bool = False,
) -> str:
    """Store `view_state` as the experiment's saved view 'havana-<table>' (or 'havana-all') and return the part of
    the UI's URL after the host that opens it."""
    from mlflow.tracking import MlflowClient

    from havana.utils.tracking import with_retries

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = with_retries(lambda: client.get_experiment_by_name(experiment)).experiment_id
    key = f"havana-{table or 'all'}"
    state = json.dumps(view_state(records, table, metrics, narrowed))
    with_retries(lambda: client.set_experiment_tag(experiment_id, VIEW_TAG + key, state))
    return RUNS_PAGE.format(id=experiment_id, key=key)


def _seed_key(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.isdigit() else (1 << 30, seed)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def render_comparison(
    records: Sequence[RunRecord], metrics: Sequence[str] = DEFAULT_METRICS, table: str | None = None
) -> str:
    """A fixed-width table: one line per run (its label in `table` or row key, configuration hash, seed, extractor,
    switches, weights, metrics in percent), and after each configuration's seeds a 'mean ± std' line; metrics absent
    from a run show n/a. Runs of two configurations of a row are never averaged together."""
    head = ["row", "config", "seed", "extractor", "switches", "weights", *metrics]
    lines: list[list[str]] = []
    groups: dict[tuple[str, str, str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault(record.configuration, []).append(record)
    for (_, extractor, _, config_hash), members in groups.items():
        label = members[0].label(table)
        for record in members:
            lines.append(
                [
                    label,
                    _short(config_hash),
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
            lines.append([label, _short(config_hash), f"mean of {len(members)}", "", "", "", *summary])
    return text_table(head, lines)


def mlflow_side(tracking_uri: str, experiment: str, reference: str, table: str | None) -> dict:
    """The metrics JSONs (each run's evaluation artifact) of the runs `reference` names, by (dataset, extractor,
    row) and seed, for `--compare`: the runs of the configuration whose hash starts with it, else those of the
    commit (git SHA prefix), one configuration per row as `select_configurations` picks."""
    import tempfile
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from havana.utils.tracking import with_retries

    records = read_runs(tracking_uri, experiment, table)
    chosen = [r for r in records if r.config_hash and r.config_hash.startswith(reference)]
    if not chosen:
        chosen = select_configurations([r for r in records if r.git_sha.startswith(reference)]).records
    if not chosen:
        raise HavanaError(
            f"no run of experiment '{experiment}' has a config_hash or git_sha starting with '{reference}', and no "
            "folder of that name exists; pass two config hashes, two git SHAs or two results folders."
        )
    client = MlflowClient(tracking_uri=tracking_uri)
    side: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        for record in chosen:
            local = Path(with_retries(lambda: client.download_artifacts(record.run_id, "evaluation", folder)))
            found = sorted(local.glob(f"seed{record.seed}.json")) or sorted(local.glob("*.json"))
            if found and record.seed.isdigit():
                payload = json.loads(found[0].read_text(encoding="utf-8"))
                side.setdefault((record.dataset, record.extractor, record.row), {})[int(record.seed)] = payload
            for path in local.glob("*.json"):
                path.unlink()
    if not side:
        raise HavanaError(f"the runs '{reference}' names hold no evaluation artifact; rerun their evaluate jobs.")
    return side


RUNS_TABLE = "#/experiments/{id}/runs?workflowType=machine_learning"  # the runs table, not the GenAI overview


def ui_pages(tracking_uri: str) -> list[tuple[str, str]]:
    """(what, page) for each experiment the pipeline made in the store: its runs table, then each view `havana runs`
    saved; a page is the part of the UI's URL after the host. MLflow 3.17 opens an experiment reached from its
    experiments list on the GenAI overview, so these are the pages to open instead."""
    from mlflow.tracking import MlflowClient

    from havana.utils.tracking import EXPERIMENT_KIND, _sqlite_file, with_retries

    database = _sqlite_file(tracking_uri)
    if database is not None and not database.is_file():
        raise HavanaError(f"there is no MLflow store at {database}; run the pipeline first or fix the store's URI.")
    client = MlflowClient(tracking_uri=tracking_uri)
    pages = []
    experiments = [  # the pipeline's (one per dataset), not MLflow's empty Default
        e
        for e in with_retries(lambda: client.search_experiments())
        if e.tags.get(EXPERIMENT_KIND[0]) == EXPERIMENT_KIND[1]
    ]
    for experiment in sorted(experiments, key=lambda e: e.name):
        pages.append((f"{experiment.name}: runs", RUNS_TABLE.format(id=experiment.experiment_id)))
        for tag in sorted(tag for tag in experiment.tags if tag.startswith(VIEW_TAG)):
            key = tag[len(VIEW_TAG) :]
            pages.append((f"{experiment.name}: view {key}", RUNS_PAGE.format(id=experiment.experiment_id, key=key)))
    return pages

"""What each Snakemake job reads and which config sections it receives: the job declarations.

The rules (workflow/rules/*.smk) build their inputs and params from these functions, and `havana plan` counts jobs
from them. The report's specs (havana.report) say which metrics, histories and features a table or figure opens;
this module asks them, and the layout (havana.layout) turns every run coordinate into a path.

- the reads of each report job (`table_reads`, `summary_reads`, `figure_reads`): the files the job opens, which are
  exactly the job's Snakemake inputs; a missing one is an error naming it (`layout.require`), never an "n/a" cell.
- `job_sections`: the config sections each job's CLI reads. A job receives a config file holding only those sections
  (`write_job_config`), named by their digest, so its params change exactly when the settings it reads change, and a
  CLI that read an undeclared section would fail instead of silently using a stale value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from havana.errors import HavanaError
from havana.layout import (
    BASELINE,
    SUMMARY,
    Layout,
    active_datasets,
    extractor_origin,
    model_source,
    seeds,
    summary_tables,
    table_names,
)
from havana.report import figures, model
from havana.utils import atomic


def _table_rows(config: Mapping[str, Any], names: Iterable[str]) -> tuple[set[str], set[str]]:
    """(extractors, head rows) named by the rows of tables `names`, read without validation (digest only)."""
    extractors, rows = set(), set()
    for name in names:
        for row in (config.get("tables", {}).get(name, {}) or {}).get("rows", []) or []:
            extractors.add(row.get("extractor"))
            rows.add(row.get("row"))
    return extractors - {None}, rows - {None, BASELINE}


def job_sections(config: Mapping[str, Any], job: str, **wildcards: Any) -> list[tuple[str, ...]]:
    """Key paths of the config sections job `job` reads, for these wildcards (rule names of workflow/rules)."""
    if job in ("train_extractor", "import_extractor", "extract_features", "import_features"):
        return [("extractors", wildcards["extractor"])]
    if job == "train_head":
        return [
            ("heads", "train"),
            ("heads", "rows", wildcards["row"]),
            ("heads", "beta_by_dataset", wildcards["dataset"]),
        ]
    if job == "evaluate":
        return [("evaluation",)]
    common = [("results_dir",), ("resources_dir",), ("seeds",), ("active_datasets",)]
    if job == "table" or job == SUMMARY:
        names = [wildcards["name"]] if job == "table" else summary_tables(config)
        extractors, rows = _table_rows(config, names)
        return (
            common
            + [("tables", name) for name in names]
            + [("summary",)] * (job == SUMMARY)
            + [("heads", "train", "epochs")]
            + [("heads", "rows", row) for row in sorted(rows)]
            + [("extractors", extractor) for extractor in sorted(extractors)]
        )
    if job == "figure":
        # A figure reads its own section, the rows it plots (Fig. 8's alpha and beta, with the datasets' default beta),
        # their extractors (Fig. 9's parameter counts) and the evaluation settings (Fig. 5's ranking).
        runs = sorted(figure_runs(config, wildcards["name"]))
        return (
            common
            + [("figures", wildcards["name"]), ("heads", "beta_by_dataset"), ("evaluation",)]
            + [("heads", "rows", row) for row in sorted({row for _, row in runs} - {BASELINE})]
            + [("extractors", extractor) for extractor in sorted({extractor for extractor, _ in runs})]
        )
    raise ValueError(f"no config declaration for job {job!r}")


def config_subset(config: Mapping[str, Any], paths: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    """A nested copy of `config` holding only the key paths `paths` (absent ones left out)."""
    subset: dict[str, Any] = {}
    for path in paths:
        node: Any = config
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
        else:
            target = subset
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = json.loads(json.dumps(node, default=str))
    return subset


def config_digest(subset: Mapping[str, Any]) -> str:
    """A short stable hash of a config subset."""
    return hashlib.sha256(json.dumps(subset, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_job_config(config: Mapping[str, Any], job: str, **wildcards: Any) -> str:
    """Write the sections job `job` reads to `configs/<digest>.yaml` (once, atomically) and return the path.

    The name is the content's digest, so two invocations with different settings never write the same file and the
    same settings always give the same path: the path is the job's params-trigger."""
    subset = config_subset(config, job_sections(config, job, **wildcards))
    if job in ("train_head", "evaluate") and {"dataset", "extractor", "row"} <= wildcards.keys():
        # the MLflow tag table_cells: only this run's cells, so edits to other tables rerun nothing
        subset["table_cells"] = cells_fed(config, wildcards["dataset"], wildcards["extractor"], wildcards["row"])
    path = Layout.of(config).job_config(config_digest(subset))
    if not Path(path).is_file():
        atomic.write_text(path, yaml.safe_dump(subset, sort_keys=False))
    return path


def cells_fed(config: Mapping[str, Any], dataset: str, extractor: str, row_name: str) -> list[str]:
    """'table3:V+J' for every table row with a cell that reads (dataset, extractor, row): an MLflow run's
    table_cells."""
    fed = []
    for name in table_names(config):
        spec = model.table_spec(config, name)
        for row in spec.rows:
            if (row.extractor, row.row) == (extractor, row_name) and any(
                (column.dataset or row.dataset) == dataset for column in spec.columns
            ):
                fed.append(f"{name}:{row.label}")
    return list(dict.fromkeys(fed))


# ---------------------------------------------------------------- what each report job reads


def table_reads(config: Mapping[str, Any], name: str) -> list[str]:
    """The metrics files table `name` reads: every cell on an active dataset, every seed."""
    layout = Layout.of(config)
    keys = model.required_runs(model.table_spec(config, name), seeds(config), active_datasets(config))
    return sorted(layout.metrics(*key) for key in keys)


def summary_reads(config: Mapping[str, Any]) -> list[str]:
    """The metrics files the reproduction summary reads (those of every table it judges)."""
    return sorted({path for name in summary_tables(config) for path in table_reads(config, name)})


def figure_names(config: Mapping[str, Any]) -> list[str]:
    """The configured figures, each checked to be one the library draws."""
    for name in config.get("figures", {}) or {}:
        if name not in figures.FIGURES:
            raise HavanaError(
                f"figures.{name} is not a figure this pipeline draws; use one of {', '.join(figures.FIGURES)}."
            )
    return list(config.get("figures", {}) or {})


def figure_reads(config: Mapping[str, Any], name: str) -> list[str]:
    """The files figure `name` reads (metrics, histories, features, head outputs, manifest) on active datasets; none
    when it draws no active dataset (then it is not a target)."""
    chosen = figures.active_settings(config, name)
    return [] if chosen is None else sorted(set(chosen.reads(Layout.of(config), seeds(config))))


def figure_runs(config: Mapping[str, Any], name: str) -> set[tuple[str, str]]:
    """(extractor, row) of every run figure `name` names, on any dataset (for the cross-reference check)."""
    return set(figures.settings(config, name).runs())


def check_references(config: Mapping[str, Any]) -> None:
    """HavanaError, in one sentence, when the config names a dataset, extractor or head row it does not define."""
    for dataset in active_datasets(config):
        if dataset not in (config.get("datasets") or {}):
            raise HavanaError(
                f"active_datasets names '{dataset}' but datasets has no entry for it "
                f"(known: {', '.join(config.get('datasets') or {}) or 'none'}); add datasets.{dataset} or drop it."
            )
    named = {(row.extractor, row.row) for name in table_names(config) for row in model.table_spec(config, name).rows}
    for name in figure_names(config):
        named |= figure_runs(config, name)
    extractors = config.get("extractors") or {}
    rows = (config.get("heads") or {}).get("rows") or {}
    for extractor, row in sorted(named):
        if extractor not in extractors:
            raise HavanaError(
                f"a table or figure names extractor '{extractor}', which extractors does not define "
                f"(known: {', '.join(extractors) or 'none'})."
            )
        source = extractors[extractor].get("model_from") if isinstance(extractors[extractor], Mapping) else None
        if source and (
            source not in extractors
            or model_source(config, source) != source
            or extractor_origin(config, source) == "features"
        ):
            raise HavanaError(
                f"extractors.{extractor}.model_from names '{source}', which must be an extractors "
                f"entry that trains or imports its own model (known: {', '.join(extractors)})."
            )
        if row != BASELINE and row not in rows:
            raise HavanaError(
                f"a table or figure names head row '{row}', which heads.rows does not define; "
                f"add heads.rows.{row} or use one of: {', '.join(rows) or 'none defined'}."
            )

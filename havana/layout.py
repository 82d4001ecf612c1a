"""Where every file of a run lives, and what each job reads: declared once, here.

The Snakemake rules (workflow/rules/common.smk) build their inputs, outputs and params from this module, and the
report readers (havana.report.tables, summary, figures) open files through it, so Snakemake's inputs and the library's
reads cannot drift apart: change a template below and every rule and every reader moves together (tested).

Three declarations:
- `Layout`: the path of every file under `results_dir` and `resources_dir`.
- the reads of each report job (`table_reads`, `summary_reads`, `figure_reads`): the files the job opens, which are
  exactly the job's Snakemake inputs; a missing one is an error naming it (`require`), never an "n/a" cell.
- `job_sections`: the config sections each job's CLI reads. A job receives a config file holding only those sections
  (`write_job_config`), named by their digest, so its params change exactly when the settings it reads change, and a
  CLI that read an undeclared section would fail instead of silently using a stale value.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from havana import atomic
from havana.errors import HavanaError

BASELINE = "baseline"  # the row name meaning raw extractor features, evaluated without a head
TABLE_FORMATS = ("html", "md", "csv", "tex")  # every table and the summary; html is shown inline in the report
SUMMARY = "summary"  # the reproduction summary's file name under tables/ (it is not a table of the config)

# Path templates, relative to results_dir (RESULTS) or resources_dir (RESOURCES). Change one and every rule and every
# reader moves with it. Wildcard-style fields: {dataset}, {extractor}, {row}, {seed}, {name}, {ext}.
RESULTS = {
    "model": "{dataset}/extractors/{extractor}/model.pt",
    "features": "{dataset}/features/{extractor}.h5",
    "head_dir": "{dataset}/heads/{extractor}/{row}/seed{seed}",
    "metrics": "{dataset}/metrics/{extractor}/{row}/seed{seed}.json",
    "table": "tables/{name}.{ext}",
    "figure": "figures/{name}_{title}.png",
    "job_config": "configs/{digest}.yaml",
    "log": "logs/{job}.log",
}
RESOURCES = {
    "manifest": "{dataset}/manifest.csv",
    "synthetic_archive": "archives/{dataset}",
}
# Files inside a head's folder (written by `havana train-head`).
HEAD_FILES = {"head": "head.pt", "history": "history.csv"}
RUN_ID_FILE = "mlflow_run_id"  # beside a training job's outputs: the MLflow run that produced them


@dataclass(frozen=True)
class Layout:
    """Paths of one run's files. Arguments may be Snakemake wildcards ("{dataset}"), giving patterns for rules."""

    results: str = "results"
    resources: str = "resources"

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> "Layout":
        """The layout under the config's `results_dir` and `resources_dir`."""
        return cls(str(config.get("results_dir", cls.results)), str(config.get("resources_dir", cls.resources)))

    def _results(self, key: str, **fields: Any) -> str:
        return f"{self.results}/{RESULTS[key].format(**fields)}"

    def _resources(self, key: str, **fields: Any) -> str:
        return f"{self.resources}/{RESOURCES[key].format(**fields)}"

    def manifest(self, dataset: str) -> str:
        return self._resources("manifest", dataset=dataset)

    def synthetic_archive(self, dataset: str) -> str:
        return self._resources("synthetic_archive", dataset=dataset)

    def model(self, dataset: str, extractor: str) -> str:
        return self._results("model", dataset=dataset, extractor=extractor)

    def features(self, dataset: str, extractor: str) -> str:
        return self._results("features", dataset=dataset, extractor=extractor)

    def head_dir(self, dataset: str, extractor: str, row: str, seed: int | str) -> str:
        return self._results("head_dir", dataset=dataset, extractor=extractor, row=row, seed=seed)

    def head_file(self, dataset: str, extractor: str, row: str, seed: int | str, kind: str) -> str:
        """One of HEAD_FILES (head, history, embeddings) of a head run."""
        return f"{self.head_dir(dataset, extractor, row, seed)}/{HEAD_FILES[kind]}"

    def head_files(self, dataset: str, extractor: str, row: str, seeds: Sequence[int], kind: str) -> list[str]:
        """One of HEAD_FILES for every seed: the outputs of one train_head job, which trains a row's seeds stacked."""
        return [self.head_file(dataset, extractor, row, seed, kind) for seed in seeds]

    def metrics(self, dataset: str, extractor: str, row: str, seed: int | str) -> str:
        return self._results("metrics", dataset=dataset, extractor=extractor, row=row, seed=seed)

    def run_id(self, dataset: str, extractor: str, row: str, seed: int | str) -> str:
        """The MLflow run-id file of the training job behind one metrics file (the extractor's for the baseline)."""
        folder = (str(Path(self.model(dataset, extractor)).parent) if row == BASELINE
                  else self.head_dir(dataset, extractor, row, seed))
        return f"{folder}/{RUN_ID_FILE}"

    def table(self, name: str, ext: str) -> str:
        return self._results("table", name=name, ext=ext)

    def figure(self, name: str) -> str:
        from havana.report.figures import FIGURES

        return self._results("figure", name=name, title=FIGURES[name].title)

    def job_config(self, digest: str) -> str:
        return self._results("job_config", digest=digest)

    def log(self, job: str) -> str:
        return self._results("log", job=job)


def _pattern(template: str) -> re.Pattern:
    """A regex matching paths made from `template`, one named group per field (fields never span a '/')."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^/]+)" for index, part in enumerate(parts))
    return re.compile(regex + r"\Z")


def producer(layout: Layout, path: str) -> tuple[str, dict[str, str]]:
    """Which kind of file `path` is and its fields, e.g. ("metrics", {dataset, extractor, row, seed}): the inverse of
    the templates, so a consumer of reads (`havana plan`) finds the job that writes each file as Snakemake would."""
    candidates = [(key, f"{layout.results}/{template}") for key, template in RESULTS.items()]
    candidates += [(kind, f"{layout.results}/{RESULTS['head_dir']}/{name}") for kind, name in HEAD_FILES.items()]
    candidates += [(key, f"{layout.resources}/{template}") for key, template in RESOURCES.items()]
    for key, template in candidates:
        match = _pattern(template).match(path)
        if match:
            return key, match.groupdict()
    raise ValueError(f"{path} is not a path of the layout")


# ---------------------------------------------------------------- the config each job reads

def active_datasets(config: Mapping[str, Any]) -> list[str]:
    """The datasets this run covers; cells and panels on other datasets are not run."""
    if "active_datasets" not in config:
        raise HavanaError("config has no 'active_datasets'; list the datasets this run covers, e.g. [market1501].")
    return list(config["active_datasets"])


def seeds(config: Mapping[str, Any]) -> list[int]:
    """The config's `seeds`, checked to be a non-empty list of integers."""
    value = config.get("seeds")
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise HavanaError(f"config 'seeds' must be a non-empty list of integers, not {value!r}.")
    return value


def table_names(config: Mapping[str, Any]) -> list[str]:
    """The configured paper tables (`tables.table<N>`), in numeric order."""
    names = [name for name in config.get("tables", {}) or {} if name.startswith("table") and name[5:].isdigit()]
    return sorted(names, key=lambda name: int(name[5:]))


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
    if job in ("train_extractor", "extract_features"):
        return [("extractors", wildcards["extractor"])]
    if job == "train_head":
        return [("heads", "train"), ("heads", "rows", wildcards["row"]), ("heads", "beta_by_dataset", wildcards["dataset"])]
    if job == "evaluate":
        return [("evaluation",)]
    common = [("results_dir",), ("resources_dir",), ("seeds",), ("active_datasets",)]
    if job == "table" or job == SUMMARY:
        names = [wildcards["name"]] if job == "table" else summary_tables(config)
        extractors, rows = _table_rows(config, names)
        return (common + [("tables", name) for name in names] + [("summary",)] * (job == SUMMARY)
                + [("heads", "train", "epochs")] + [("heads", "rows", row) for row in sorted(rows)]
                + [("extractors", extractor) for extractor in sorted(extractors)])
    if job == "figure":
        # A figure reads its own section, the rows it plots (Fig. 8's alpha and beta, with the datasets' default beta),
        # their extractors (Fig. 9's parameter counts) and the evaluation settings (Fig. 5's ranking).
        runs = sorted(figure_runs(config, wildcards["name"]))
        return (common + [("figures", wildcards["name"]), ("heads", "beta_by_dataset"), ("evaluation",)]
                + [("heads", "rows", row) for row in sorted({row for _, row in runs} - {BASELINE})]
                + [("extractors", extractor) for extractor in sorted({extractor for extractor, _ in runs})])
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
        from havana.report import tables  # it imports this module

        subset["table_cells"] = tables.cells_fed(config, wildcards["dataset"], wildcards["extractor"], wildcards["row"])
    path = Layout.of(config).job_config(config_digest(subset))
    if not Path(path).is_file():
        atomic.write_text(path, yaml.safe_dump(subset, sort_keys=False))
    return path


# ---------------------------------------------------------------- what each report job reads

def summary_tables(config: Mapping[str, Any]) -> list[str]:
    """The tables the reproduction summary judges: `summary.tables`, or every tables.table<N>."""
    chosen = (config.get("summary", {}) or {}).get("tables")
    return list(chosen) if chosen is not None else table_names(config)


def table_reads(config: Mapping[str, Any], name: str) -> list[str]:
    """The metrics files table `name` reads: every cell on an active dataset, every seed."""
    from havana.report import tables

    layout = Layout.of(config)
    keys = tables.required_runs(tables.table_spec(config, name), seeds(config), active_datasets(config))
    return sorted(layout.metrics(*key) for key in keys)


def summary_reads(config: Mapping[str, Any]) -> list[str]:
    """The metrics files the reproduction summary reads (those of every table it judges)."""
    return sorted({path for name in summary_tables(config) for path in table_reads(config, name)})


def figure_names(config: Mapping[str, Any]) -> list[str]:
    """The configured figures, each checked to be one the library draws."""
    from havana.report import figures

    for name in config.get("figures", {}) or {}:
        if name not in figures.FIGURES:
            raise HavanaError(f"figures.{name} is not a figure this pipeline draws; use one of {', '.join(figures.FIGURES)}.")
    return list(config.get("figures", {}) or {})


def figure_reads(config: Mapping[str, Any], name: str) -> list[str]:
    """The files figure `name` reads (metrics, histories, features, head outputs, manifest) on active datasets; none
    when it draws no active dataset (then it is not a target)."""
    from havana.report import figures

    chosen = figures.active_settings(config, name)
    return [] if chosen is None else sorted(set(chosen.reads(Layout.of(config), seeds(config))))


def figure_runs(config: Mapping[str, Any], name: str) -> set[tuple[str, str]]:
    """(extractor, row) of every run figure `name` names, on any dataset (for the cross-reference check)."""
    from havana.report import figures

    return set(figures.settings(config, name).runs())


def model_source(config: Mapping[str, Any], extractor: str) -> str:
    """The extractors entry whose trained model.pt `extractor` extracts with: its model_from, else itself."""
    return ((config.get("extractors") or {}).get(extractor) or {}).get("model_from") or extractor


def check_references(config: Mapping[str, Any]) -> None:
    """HavanaError, in one sentence, when the config names a dataset, extractor or head row it does not define."""
    from havana.report import tables

    for dataset in active_datasets(config):
        if dataset not in (config.get("datasets") or {}):
            raise HavanaError(f"active_datasets names '{dataset}' but datasets has no entry for it "
                              f"(known: {', '.join(config.get('datasets') or {}) or 'none'}); add datasets.{dataset} or drop it.")
    named = {(row.extractor, row.row) for name in table_names(config) for row in tables.table_spec(config, name).rows}
    for name in figure_names(config):
        named |= figure_runs(config, name)
    extractors = config.get("extractors") or {}
    rows = (config.get("heads") or {}).get("rows") or {}
    for extractor, row in sorted(named):
        if extractor not in extractors:
            raise HavanaError(f"a table or figure names extractor '{extractor}', which extractors does not define "
                              f"(known: {', '.join(extractors) or 'none'}).")
        source = extractors[extractor].get("model_from") if isinstance(extractors[extractor], Mapping) else None
        if source and (source not in extractors or model_source(config, source) != source):
            raise HavanaError(f"extractors.{extractor}.model_from names '{source}', which must be an extractors "
                              f"entry that trains its own model (known: {', '.join(extractors)}).")
        if row != BASELINE and row not in rows:
            raise HavanaError(f"a table or figure names head row '{row}', which heads.rows does not define; "
                              f"add heads.rows.{row} or use one of: {', '.join(rows) or 'none defined'}.")


def require(paths: Iterable[str | os.PathLike], job: str) -> None:
    """HavanaError naming the first declared input of `job` that does not exist (never a silently empty cell)."""
    missing = [str(path) for path in paths if not Path(path).is_file()]
    if missing:
        more = f" ({len(missing) - 1} more of its inputs are missing too)" if len(missing) > 1 else ""
        raise HavanaError(f"{job} needs {missing[0]}, which does not exist{more}; run the jobs that produce it first "
                          f"(e.g. `snakemake {missing[0]}`).")

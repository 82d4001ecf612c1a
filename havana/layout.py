"""Where every file of a run lives, and the run coordinates it is addressed by: declared once, here.

The Snakemake rules (workflow/rules/common.smk) build their inputs, outputs and params from this module (through the
job declarations of havana.dag.jobs), and the report readers (havana.report.tables, summary, figures) open files
through it, so Snakemake's inputs and the library's reads cannot drift apart: change a template below and every rule
and every reader moves together (tested).

- `Layout`: the path of every file under `results_dir` and `resources_dir`; `producer` is its inverse.
- run coordinates: the datasets, seeds, tables and rows a config names (`active_datasets`, `seeds`, `table_names`,
  `summary_tables`, `model_source`, `extractor_origin`, BASELINE).
- `require`: a declared input that does not exist is an error naming it, never an "n/a" cell.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from havana.errors import HavanaError

BASELINE = "baseline"  # the row name meaning raw extractor features, evaluated without a head
TABLE_FORMATS = ("html", "md", "csv", "tex")  # every table and the summary; html is shown inline in the report
SUMMARY = "summary"  # the reproduction summary's file name under tables/ (it is not a table of the config)

MODEL_FILE = "model.pt"  # a trained extractor, inside its folder (written by `havana train-extractor`)
# Beside model.pt while it trains with `train.loader: decoded`: its train images decoded and resized once (uint8),
# reused by a resumed job, removed with the checkpoint once model.pt exists (havana.data.image_cache).
IMAGE_CACHE_FILE = "train_images.pt"
# Files inside a head's folder (written by `havana train-head`).
HEAD_FILES = {"head": "head.pt", "history": "history.csv"}
RUN_ID_FILE = "mlflow_run_id"  # beside a training job's outputs: the MLflow run that produced them
# Path templates, relative to results_dir (RESULTS) or resources_dir (RESOURCES). Change one and every rule and every
# reader moves with it. Wildcard-style fields: {dataset}, {extractor}, {row}, {seed}, {name}, {ext}.
RESULTS = {
    "model": "{dataset}/extractors/{extractor}/" + MODEL_FILE,
    "features": "{dataset}/features/{extractor}.h5",
    "exported_model": "{dataset}/exports/{extractor}.{format}.pth",  # `havana export-extractor` (the demo's import)
    "exported_features": "{dataset}/exports/{extractor}.npz",  # `havana export-features` (the demo's feature file)
    "head_dir": "{dataset}/heads/{extractor}/{row}/seed{seed}",
    "metrics": "{dataset}/metrics/{extractor}/{row}/seed{seed}.json",
    "table": "tables/{name}.{ext}",
    "figure": "figures/{name}_{title}.png",
    "job_config": "configs/{digest}.yaml",
    "log": "logs/{job}.log",
    "benchmark": "benchmarks/{job}.tsv",  # Snakemake's per-job wall time, memory and I/O (`benchmark:` of every rule)
}
RESOURCES = {
    "manifest": "{dataset}/manifest.csv",
    "synthetic_archive": "archives/{dataset}",
}
# The figures this pipeline draws and the title in each one's file name (figures/<name>_<title>.png); the drawing
# functions are havana.report.figures.FIGURES, which has exactly these keys (tested).
FIGURE_TITLES = {"fig5": "retrieval", "fig6": "tsne", "fig7": "loss_curves", "fig8": "alpha_beta", "fig9": "cost"}


@dataclass(frozen=True)
class Layout:
    """Paths of one run's files. Arguments may be Snakemake wildcards ("{dataset}"), giving patterns for rules."""

    results: str = "results"
    resources: str = "resources"

    @classmethod
    def of(cls, config: Mapping[str, Any], results_dir: str | None = None) -> Layout:
        """The layout under the config's `results_dir` (or `results_dir` when given, e.g. a --results-dir option) and
        `resources_dir`."""
        results = results_dir or str(config.get("results_dir", cls.results))
        return cls(results, str(config.get("resources_dir", cls.resources)))

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

    def exported_model(self, dataset: str, extractor: str, format: str) -> str:
        return self._results("exported_model", dataset=dataset, extractor=extractor, format=format)

    def exported_features(self, dataset: str, extractor: str) -> str:
        return self._results("exported_features", dataset=dataset, extractor=extractor)

    def head_dir(self, dataset: str, extractor: str, row: str, seed: int | str) -> str:
        return self._results("head_dir", dataset=dataset, extractor=extractor, row=row, seed=seed)

    def head_file(self, dataset: str, extractor: str, row: str, seed: int | str, kind: str) -> str:
        """One of HEAD_FILES (head, history) of a head run."""
        return f"{self.head_dir(dataset, extractor, row, seed)}/{HEAD_FILES[kind]}"

    def head_files(self, dataset: str, extractor: str, row: str, seeds: Sequence[int], kind: str) -> list[str]:
        """One of HEAD_FILES for every seed: the outputs of one train_head job, which trains a row's seeds stacked."""
        return [self.head_file(dataset, extractor, row, seed, kind) for seed in seeds]

    def metrics(self, dataset: str, extractor: str, row: str, seed: int | str) -> str:
        return self._results("metrics", dataset=dataset, extractor=extractor, row=row, seed=seed)

    def run_id(self, dataset: str, extractor: str, row: str, seed: int | str) -> str:
        """The MLflow run-id file of the training job behind one metrics file (the extractor's for the baseline)."""
        folder = (
            str(Path(self.model(dataset, extractor)).parent)
            if row == BASELINE
            else self.head_dir(dataset, extractor, row, seed)
        )
        return f"{folder}/{RUN_ID_FILE}"

    def table(self, name: str, ext: str) -> str:
        return self._results("table", name=name, ext=ext)

    def figure(self, name: str) -> str:
        return self._results("figure", name=name, title=FIGURE_TITLES[name])

    def job_config(self, digest: str) -> str:
        return self._results("job_config", digest=digest)

    def log(self, job: str) -> str:
        return self._results("log", job=job)

    def benchmark(self, job: str) -> str:
        return self._results("benchmark", job=job)


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


# ---------------------------------------------------------------- run coordinates


def active_datasets(config: Mapping[str, Any]) -> list[str]:
    """The datasets this run covers; cells and panels on other datasets are not run."""
    if "active_datasets" not in config:
        raise HavanaError("config has no 'active_datasets'; list the datasets this run covers, e.g. [market1501].")
    return list(config["active_datasets"])


def seeds(config: Mapping[str, Any]) -> list[int]:
    """The config's `seeds`, checked to be a non-empty list of integers."""
    value = config.get("seeds")
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    ):
        raise HavanaError(f"config 'seeds' must be a non-empty list of integers, not {value!r}.")
    return value


def table_names(config: Mapping[str, Any]) -> list[str]:
    """The configured paper tables (`tables.table<N>`), in numeric order."""
    names = [name for name in config.get("tables", {}) or {} if name.startswith("table") and name[5:].isdigit()]
    return sorted(names, key=lambda name: int(name[5:]))


def summary_tables(config: Mapping[str, Any]) -> list[str]:
    """The tables the reproduction summary judges: `summary.tables`, or every tables.table<N>."""
    chosen = (config.get("summary", {}) or {}).get("tables")
    return list(chosen) if chosen is not None else table_names(config)


def model_source(config: Mapping[str, Any], extractor: str) -> str:
    """The extractors entry whose trained model.pt `extractor` extracts with: its model_from, else itself."""
    return ((config.get("extractors") or {}).get(extractor) or {}).get("model_from") or extractor


def extractor_origin(config: Mapping[str, Any], extractor: str) -> str:
    """How an extractors entry gets what it provides: "features" (its `features:` file is imported, nothing is trained
    or extracted), "import" (its `import:` checkpoint becomes its model.pt, which is then extracted) or "train"."""
    entry = (config.get("extractors") or {}).get(extractor) or {}
    if entry.get("features"):
        return "features"
    return "import" if entry.get("import") else "train"


def extractors_by_origin(config: Mapping[str, Any], origin: str) -> list[str]:
    """The extractors entries whose `extractor_origin` is `origin` (the rules' wildcard constraints)."""
    return [name for name in config.get("extractors") or {} if extractor_origin(config, name) == origin]


def require(paths: Iterable[str | os.PathLike], job: str) -> None:
    """HavanaError naming the first declared input of `job` that does not exist (never a silently empty cell)."""
    missing = [str(path) for path in paths if not Path(path).is_file()]
    if missing:
        more = f" ({len(missing) - 1} more of its inputs are missing too)" if len(missing) > 1 else ""
        raise HavanaError(
            f"{job} needs {missing[0]}, which does not exist{more}; run the jobs that produce it first "
            f"(e.g. `snakemake {missing[0]}`)."
        )

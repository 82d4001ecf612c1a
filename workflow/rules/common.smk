# Shared by every rule: paths, the resolved config file the jobs read, config digests for the params trigger, the
# cross-reference checks, and the targets derived from the config's table and figure cells.
#
# How jobs receive their config: the library never reads Snakemake's `config` object. Instead the config as Snakemake
# resolved it (the active config file, `--config key=value` overrides applied, schema defaults filled in) is written
# once per invocation to <results_dir>/config.resolved.yaml, atomically and only when its content changes, and every
# job passes that file to the `havana` CLI as `--config`. It is deliberately NOT a declared input: a change to one
# ablation row must not retrigger every job. Instead each rule's `params.config_digest` hashes exactly the config
# sections its job reads, so Snakemake's params rerun-trigger re-runs only the jobs whose settings changed.

import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

from havana import atomic

RESULTS = config["results_dir"]
RESOURCES = config["resources_dir"]
LOGS = f"{RESULTS}/logs"
SEEDS = [int(seed) for seed in config["seeds"]]
config["seeds"] = SEEDS  # `--config 'seeds=[0,1]'` arrives as strings; the CLI reads integers
EXTRACTOR_SEED = int(config["extractor_seed"])
TRACKING_URI = config["tracking_uri"]
ACTIVE_DATASETS = list(config["active_datasets"])
BASELINE = "baseline"  # the head name meaning raw extractor features, evaluated without a head
RESOLVED_CONFIG = f"{RESULTS}/config.resolved.yaml"
FIGURE_NAMES = {"fig5": "retrieval", "fig6": "tsne", "fig7": "loss_curves", "fig8": "alpha_beta", "fig9": "cost"}
TABLE_FILE_TYPES = ("md", "csv", "tex")
# The paper tables are tables.table<N>; tables.summary holds the reproduction summary's settings, not a table.
PAPER_TABLES = sorted((name for name in config["tables"] if re.fullmatch(r"table\d+", name)), key=lambda n: int(n[5:]))
# The software environment of every job under `--sdm conda`: this package and its pins (pyproject.toml), installed
# from this checkout, whose path pip reads from HAVANA_SOURCE. Without --sdm conda, jobs use the Python running
# Snakemake (e.g. the project's .venv).
CONDA_ENV = "../envs/havana.yaml"
os.environ.update(HAVANA_SOURCE=workflow.basedir)  # read by pip when --sdm conda builds CONDA_ENV


# Jobs call the `havana` CLI of the Python running Snakemake (e.g. .venv/bin/snakemake without an activated venv).
envvars:
    "PATH",


os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def write_resolved_config(resolved, path):
    """Write the resolved config as YAML, atomically, and only when it differs from what is there."""
    text = yaml.safe_dump(json.loads(json.dumps(resolved)), sort_keys=False)
    target = Path(path)
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return
    atomic.write_text(target, text)


def config_digest(*sections):
    """A short stable hash of config sections: a job's params change exactly when the settings it reads change."""
    blob = json.dumps(sections, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tracking_args(run_name):
    """The CLI's MLflow arguments for one job (none when tracking_uri is null)."""
    if TRACKING_URI is None:
        return ""
    return f"--tracking-uri {TRACKING_URI} --run-name {run_name}"


def manifest_path(dataset):
    return f"{RESOURCES}/{dataset}/manifest.csv"


def model_path(dataset, extractor):
    return f"{RESULTS}/{dataset}/extractors/{extractor}/model.pt"


def model_source(extractor):
    """The extractors entry whose trained model.pt `extractor` extracts with: its model_from, else itself."""
    return config["extractors"][extractor].get("model_from") or extractor


def features_path(dataset, extractor):
    return f"{RESULTS}/{dataset}/features/{extractor}.h5"


def head_dir(dataset, extractor, row, seed):
    return f"{RESULTS}/{dataset}/heads/{extractor}/{row}/seed{seed}"


def metrics_path(dataset, extractor, head, seed):
    return f"{RESULTS}/{dataset}/metrics/{extractor}/{head}/seed{seed}.json"


def table_cells(name):
    """(dataset, extractor, head) of every reproduced cell of tables.<name> whose dataset is active."""
    spec = config["tables"][name]
    cells = set()
    for row in spec["rows"]:
        for column in spec["columns"]:
            dataset = column.get("dataset") or row.get("dataset")
            if dataset in ACTIVE_DATASETS:
                cells.add((dataset, row["extractor"], row["head"]))
    return cells


def figure_datasets(name):
    """The datasets figures.<name> reads, restricted to the active ones."""
    spec = config["figures"][name]
    datasets = spec["datasets"] if "datasets" in spec else [spec["dataset"]]
    return [dataset for dataset in datasets if dataset in ACTIVE_DATASETS]


def figure_cells(name):
    """(dataset, extractor, head) whose metrics over all seeds figures.<name> plots (Figs. 8 and 9)."""
    spec = config["figures"][name]
    if name == "fig8":
        return {(ds, spec["extractor"], row) for ds in figure_datasets(name) for row in spec["rows"]}
    if name == "fig9":
        return {
            (ds, extractor, head)
            for ds in figure_datasets(name)
            for extractor in spec["extractors"]
            for head in (BASELINE, spec["head"])
        }
    return set()


def figure_heads(name):
    """(dataset, extractor, row) of the trained heads figures.<name> draws from (Figs. 5, 6, 7)."""
    spec = config["figures"][name]
    rows = {"fig5": ("head",), "fig6": ("head_mu", "head_sigma"), "fig7": ("with_c", "without_c")}.get(name, ())
    return {(ds, spec["extractor"], spec[key]) for ds in figure_datasets(name) for key in rows}


def referenced_heads():
    """Every (extractor, head) the tables and figures name, for the cross-reference check."""
    named = {(row["extractor"], row["head"]) for name in PAPER_TABLES for row in config["tables"][name]["rows"]}
    for name in config["figures"]:
        named |= {(extractor, head) for _, extractor, head in figure_cells(name) | figure_heads(name)}
    return named


def check_references():
    """Stop at parse time, with one sentence, when the config names a dataset, extractor or head row it lacks."""
    for dataset in ACTIVE_DATASETS:
        if dataset not in config["datasets"]:
            raise WorkflowError(
                f"active_datasets names '{dataset}' but datasets has no entry for it "
                f"(known: {', '.join(config['datasets'])}); add datasets.{dataset} or drop it."
            )
    rows = config["heads"]["rows"]
    for extractor, head in sorted(referenced_heads()):
        if extractor not in config["extractors"]:
            raise WorkflowError(
                f"a table or figure names extractor '{extractor}', which extractors does not define "
                f"(known: {', '.join(config['extractors'])})."
            )
        source = config["extractors"][extractor].get("model_from")
        if source and (source not in config["extractors"] or config["extractors"][source].get("model_from")):
            raise WorkflowError(
                f"extractors.{extractor}.model_from names '{source}', which must be an extractors "
                f"entry that trains its own model (known: {', '.join(config['extractors'])})."
            )
        if head != BASELINE and head not in rows:
            raise WorkflowError(
                f"a table or figure names head row '{head}', which heads.rows does not define; "
                f"add heads.rows.{head} or use one of: {', '.join(rows) or 'none defined'}."
            )


def table_inputs(table):
    """Metrics files of every active cell (all seeds) of one table, or of all tables for the summary."""
    names = PAPER_TABLES if table == "summary" else [table]
    cells = set().union(*(table_cells(name) for name in names))
    return sorted(metrics_path(ds, ex, head, seed) for ds, ex, head in cells for seed in SEEDS)


def figure_path(name):
    return f"{RESULTS}/figures/{name}_{FIGURE_NAMES[name]}.png"


def figure_inputs(name):
    """What figures.<name> reads: metrics over all seeds (8, 9), or the heads' outputs, features and manifest (5-7).
    Figs. 5 and 6 encode the first seed's head.pt over the features in their own job (no embeddings are stored)."""
    inputs = {metrics_path(ds, ex, head, seed) for ds, ex, head in figure_cells(name) for seed in SEEDS}
    for dataset, extractor, row in figure_heads(name):
        inputs |= {features_path(dataset, extractor), manifest_path(dataset)}
        for seed in SEEDS:  # Fig. 7 averages every seed's history; Figs. 5 and 6 draw one seed's head
            folder = head_dir(dataset, extractor, row, seed)
            inputs |= {f"{folder}/history.csv", f"{folder}/head.pt"}
    return sorted(inputs)


def table_targets():
    """Every table of the config plus the reproduction summary, in all three formats."""
    return [f"{RESULTS}/tables/{name}.{ext}" for name in [*PAPER_TABLES, "summary"] for ext in TABLE_FILE_TYPES]


def figure_targets():
    """Every configured figure that reads at least one active dataset."""
    return [figure_path(name) for name in config["figures"] if figure_datasets(name)]


def all_targets():
    return table_targets() + figure_targets()


def synth_args(wildcards):
    """`--ids N --cameras C ...` from datasets.synthetic.synth (the `havana synth` options)."""
    settings = config["datasets"]["synthetic"]["synth"]
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in settings.items())


def prepare_source(wildcards):
    """`--archive PATH` or `--url URL [--sha256 HEX]` for one dataset, from datasets.<ds>, quoted for the shell (an
    archive path may hold spaces)."""
    entry = config["datasets"][wildcards.dataset]
    if "synth" in entry:
        return f"--archive {shlex.quote(f'{RESOURCES}/archives/{wildcards.dataset}')}"
    checksum = f" --sha256 {shlex.quote(str(entry['sha256']))}" if entry.get("sha256") else ""
    if entry.get("url"):
        return f"--url {shlex.quote(str(entry['url']))}{checksum}"
    return f"--archive {shlex.quote(str(entry['archive']))}{checksum}"


def prepare_inputs(wildcards):
    """A synthetic dataset's rendered folder; real datasets have no input (their archive is checked by prepare)."""
    if "synth" in config["datasets"][wildcards.dataset]:
        return [f"{RESOURCES}/archives/{wildcards.dataset}"]
    return []


def head_settings(wildcards):
    """What one head job reads from the config: the shared training settings, its row, the dataset's beta."""
    heads = config["heads"]
    return config_digest(
        heads.get("train", {}), heads["rows"][wildcards.row], heads.get("beta_by_dataset", {}).get(wildcards.dataset)
    )


def evaluate_inputs(wildcards):
    inputs = {"features": features_path(wildcards.dataset, wildcards.extractor)}
    if wildcards.head != BASELINE:
        inputs["head"] = f"{head_dir(wildcards.dataset, wildcards.extractor, wildcards.head, wildcards.seed)}/head.pt"
    return inputs


def table_outputs(name):
    prefix = f"{RESULTS}/tables/{name}"
    labels = {"table": name}
    return {
        "md": report(
            f"{prefix}.md", caption="../report/table.rst", category="Tables", labels={**labels, "format": "md"}
        ),
        "csv": report(
            f"{prefix}.csv", caption="../report/table.rst", category="Tables", labels={**labels, "format": "csv"}
        ),
        "tex": report(
            f"{prefix}.tex", caption="../report/table.rst", category="Tables", labels={**labels, "format": "tex"}
        ),
    }


check_references()
write_resolved_config(config, RESOLVED_CONFIG)

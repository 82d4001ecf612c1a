# Shared by every rule: the layout, each job's config file, the cross-reference checks and the targets. Every path,
# the cells of every table and figure and what each job reads come from the library's declaration (havana/layout.py,
# havana/dag/jobs.py), which the report readers use too, so the rules' inputs and the library's reads cannot drift.
#
# How jobs receive their config: the library never reads Snakemake's `config` object. Each job gets, as
# `params.config`, a file holding only the config sections its CLI reads (havana.jobs.job_sections), as Snakemake
# resolved them (the active config file, `--config key=value` overrides, schema defaults). The file is named by the
# digest of its content and written once, atomically, so two invocations with different settings never overwrite each
# other's file, and the path changes exactly when the settings the job reads change: Snakemake's params rerun-trigger
# reruns those jobs and no others.

import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from havana import layout
from havana.dag import jobs
from havana.data.datasets import is_synthetic
from havana.errors import HavanaError
from havana.models.extractor_config import extractor_config
from havana.report.model import display_name
from havana.utils.tracking import run_name

SEEDS = [int(seed) for seed in config["seeds"]]
config["seeds"] = SEEDS  # `--config 'seeds=[0,1]'` arrives as strings; the CLI reads integers
LAYOUT = layout.Layout.of(config)
EXTRACTOR_SEED = int(config["extractor_seed"])
EXTRACTOR_THREADS = int(config["extractor_threads"])
TRACKING_URI = config["tracking_uri"]
# The software environment of every job under `--sdm conda`: this package and its pins (pyproject.toml), installed
# from this checkout, whose path pip reads from HAVANA_SOURCE. Without --sdm conda, jobs use the Python running
# Snakemake (e.g. the project's .venv).
CONDA_ENV = "../envs/havana.yaml"
os.environ.update(HAVANA_SOURCE=workflow.basedir)  # read by pip when --sdm conda builds CONDA_ENV


# Jobs call the `havana` CLI of the Python running Snakemake (e.g. .venv/bin/snakemake without an activated venv).
envvars:
    "PATH",


os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def declared(function, *args, **kwargs):
    """Call a havana.layout or havana.dag.jobs declaration; a config mistake stops the run with its one sentence, not a traceback."""
    try:
        return function(*args, **kwargs)
    except HavanaError as exc:
        raise WorkflowError(str(exc)) from None


declared(jobs.check_references, config)
PAPER_TABLES = layout.table_names(config)
FIGURES = [name for name in declared(jobs.figure_names, config) if declared(jobs.figure_reads, config, name)]


def names_pattern(origin):
    """A wildcard constraint matching exactly the extractors entries of one origin (havana.layout.extractor_origin):
    train_extractor and import_extractor write the same model.pt path, extract_features and import_features the same
    feature file, and each entry's origin picks its rule."""
    names = layout.extractors_by_origin(config, origin)
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


def extractor_entry(wildcards):
    """The typed extractors.<extractor> entry of a job (a config mistake is its one sentence)."""
    return declared(extractor_config, config, wildcards.extractor)


def import_args(wildcards):
    """`--format F --checkpoint FILE --arch A --image-size H W [--last-stride S]` of an imported extractor, quoted."""
    entry = extractor_entry(wildcards)
    source = entry.import_
    stride = f" --last-stride {source.last_stride}" if source.last_stride is not None else ""
    height, width = entry.image_size
    return (
        f"--format {source.format} --checkpoint {shlex.quote(source.checkpoint)} --arch {entry.arch} "
        f"--image-size {height} {width}{stride}"
    )


def job_config(job):
    """params.config of a wildcard rule: the path of the job's config file (see the top of this file)."""
    return lambda wildcards: declared(jobs.write_job_config, config, job, **wildcards)


def tracking_args(*run_names):
    """The CLI's MLflow arguments for one job: its run name, or one per head it trains (none when tracking_uri is null)."""
    if TRACKING_URI is None:
        return ""
    return f"--tracking-uri {shlex.quote(TRACKING_URI)} --run-name {' '.join(map(shlex.quote, run_names))}"


def table_targets():
    """Every table of the config plus the reproduction summary, in all four formats."""
    return [LAYOUT.table(name, ext) for name in [*PAPER_TABLES, layout.SUMMARY] for ext in layout.TABLE_FORMATS]


def all_targets():
    return table_targets() + [LAYOUT.figure(name) for name in FIGURES]


def synth_args(wildcards):
    """`--ids N --cameras C ...` from datasets.synthetic.synth (the `havana synth` options)."""
    settings = config["datasets"]["synthetic"]["synth"]
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in settings.items())


def prepare_source(wildcards):
    """`--archive PATH` or `--url URL [--sha256 HEX]` for one dataset, from datasets.<ds>, quoted for the shell (an
    archive path may hold spaces)."""
    entry = config["datasets"][wildcards.dataset]
    if is_synthetic(wildcards.dataset):
        return f"--archive {shlex.quote(LAYOUT.synthetic_archive(wildcards.dataset))}"
    checksum = f" --sha256 {shlex.quote(str(entry['sha256']))}" if entry.get("sha256") else ""
    if entry.get("url"):
        return f"--url {shlex.quote(str(entry['url']))}{checksum}"
    return f"--archive {shlex.quote(str(entry['archive']))}{checksum}"


def prepare_inputs(wildcards):
    """A synthetic dataset's rendered folder; real datasets have no input (their archive is checked by prepare)."""
    if is_synthetic(wildcards.dataset):
        return [LAYOUT.synthetic_archive(wildcards.dataset)]
    return []


def evaluate_inputs(wildcards):
    """The features, and every seed's head unless the row is the baseline (raw features, no head)."""
    inputs = {"features": LAYOUT.features(wildcards.dataset, wildcards.extractor)}
    if wildcards.row != layout.BASELINE:
        inputs["heads"] = LAYOUT.head_files(wildcards.dataset, wildcards.extractor, wildcards.row, SEEDS, "head")
    return inputs


# The report's categories. Its side list sorts them by name, so a number leads each: the summary and the tables come
# first, the figures next and the Markdown/CSV/LaTeX downloads last (its first page shows the summary and every HTML
# table: workflow/report/workflow.rst).
REPORT_CATEGORIES = {
    "summary": "1. Reproduction summary",
    "tables": "2. Tables",
    "figures": "3. Figures",
    "downloads": "4. Downloads (md, csv, tex)",
}


def table_outputs(name):
    """The four formats of one table (or the summary), each wrapped in report() with the table caption: the HTML page
    under the summary's or the tables' category, the others under the downloads, one subcategory per table."""
    return {ext: table_report(name, ext) for ext in layout.TABLE_FORMATS}


def table_report(name, ext):
    """One format of one table as a report() output."""
    title = display_name(name)
    if ext == "html":
        kind = "summary" if name == layout.SUMMARY else "tables"
        return report(
            LAYOUT.table(name, ext),
            caption="../report/table.rst",
            category=REPORT_CATEGORIES[kind],
            labels={"table": title},
        )
    return report(
        LAYOUT.table(name, ext),
        caption="../report/table.rst",
        category=REPORT_CATEGORIES["downloads"],
        subcategory=title,
        labels={"table": title, "format": ext},
    )

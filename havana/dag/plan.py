"""What a config's run will cost before it starts: per stage the jobs, the compute hours and the disk kept and written.

Jobs are the Snakemake DAG's (the same cells and reads the workflow declares: tests compare the counts with
`snakemake -n`). Work is counted from the code's own shapes: the real extractor and head modules are built on the meta
device (no memory, no weights) and their FLOPs counted with torch.utils.flop_counter, their state dicts sized
tensor by tensor; a head step's ATen calls and bytes are counted on the engine's own step
(havana.engine.step_counts); every job pays a fixed cost besides its work. Dataset sizes are the registry's official
statistics (or the synthetic dataset's rendering plan). Rates and costs per device kind are data in
havana/dag/costs.py, each marked measured or extrapolated; `calibrated` replaces the cpu ones by a run's measured
job-seconds (Snakemake's benchmark files), stage by stage.

Disk: results/ only (the prepared dataset images live under resources/ and are not counted; logs, MLflow and
provenance files are a few kB per job; files the workflow exports for an import of its own, as the demo does, are not
counted either). Imported models and feature files count as written, with no training hours. `kept` is what the stage
leaves; `written` adds the training checkpoints written on the way (weights + Adam's two moments): one per
`checkpoint_minutes` of the job's time on the first device kind (havana.utils.checkpointing.checkpoints_written),
none kept once the job's outputs exist.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from havana import layout
from havana.config import from_mapping
from havana.dag import costs
from havana.dag.jobs import figure_names, figure_reads, table_reads
from havana.data.datasets import is_synthetic
from havana.data.features import INDEX_CHUNK_ROWS, SPLITS, feature_chunk_rows
from havana.engine.step_counts import StepCounts, step_counts
from havana.errors import HavanaError
from havana.layout import BASELINE
from havana.models.extractor_config import ExtractorConfig, extractor_config
from havana.models.head import HeadTrainConfig, RowConfig, build_head, resolve_row
from havana.utils.checkpointing import checkpoints_written

STAGES = ("prepare", "train_extractor", "extract_features", "train_head", "evaluate", "tables_figures")
GPU_STAGES = ("train_extractor", "extract_features", "train_head")
FLIP_VIEWS = 2  # query and gallery are stored plain + flipped
FLOAT_BYTES = 4
# Small files, measured on the demo (bytes): one row of history.csv, a metrics JSON, a table (md+csv+tex), a figure.
HISTORY_ROW_BYTES = 160
METRICS_BYTES = 1_200
TABLE_BYTES = 6_000
FIGURE_BYTES = 150_000
MANIFEST_ROW_BYTES = 64
PATH_BYTES = 80  # an image path's heap entry in the feature file (about 60 characters + 16-byte header, padded)
VLEN_HANDLE_BYTES = 16  # a variable-length string's reference in its dataset
TORCH_SAVE_BYTES_PER_TENSOR = 420  # torch.save's zip record and pickle entry per tensor, measured on head.pt files
HDF5_FIXED_BYTES = 40_000  # superblock, groups, attributes and the fixed-size datasets' first chunks


@dataclass(frozen=True)
class Job:
    """One Snakemake job: its rule and wildcards."""

    stage: str
    dataset: str = ""
    extractor: str = ""
    row: str = ""
    seed: int | None = None
    seeds: tuple[int, ...] = ()  # train_head, evaluate: the seeds the one job trains (stacked) or scores


@dataclass
class StageEstimate:
    """One stage's jobs, compute hours per device kind, and bytes kept and written."""

    stage: str
    jobs: int = 0
    hours: dict[str, float] = field(default_factory=dict)  # device kind -> hours of its work
    kept: int = 0
    written: int = 0
    uses_gpu: bool = False


@dataclass
class Plan:
    """The whole estimate, stage by stage, for one config."""

    stages: list[StageEstimate]
    device_kinds: list[str]
    notes: list[str]

    def total(self) -> StageEstimate:
        """The sum over stages (GPU hours only over the GPU stages)."""
        total = StageEstimate("total")
        for stage in self.stages:
            total.jobs += stage.jobs
            total.kept += stage.kept
            total.written += stage.written
            for kind, hours in stage.hours.items():
                if stage.uses_gpu:
                    total.hours[kind] = total.hours.get(kind, 0.0) + hours
        return total


# ----------------------------------------------------------------------------------------------------------- jobs


def planned_jobs(config: dict[str, Any]) -> dict[str, list[Job]]:
    """Every job of `snakemake all` for this config, by stage, found as Snakemake finds them: from the files the
    tables and figures read (havana.layout's declaration, the rules' inputs) back to the jobs that write them."""
    config = {**config, "seeds": [int(seed) for seed in config.get("seeds", [0])]}
    where = layout.Layout.of(config)
    tables = layout.table_names(config)
    drawn = [name for name in figure_names(config) if figure_reads(config, name)]
    reads = {path for name in tables for path in table_reads(config, name)}
    reads |= {path for name in drawn for path in figure_reads(config, name)}
    evaluated, heads, extractors, datasets = set(), set(), set(), set()
    for path in reads:
        kind, fields = layout.producer(where, path)
        key = tuple(fields.get(name) for name in ("dataset", "extractor", "row", "seed"))
        if kind == "metrics":
            evaluated.add(key)
        elif kind in layout.HEAD_FILES:
            heads.add(key)
        elif kind == "features":
            extractors.add(key[:2])
        elif kind == "manifest":
            datasets.add(key[0])
    heads |= {key for key in evaluated if key[2] != BASELINE}
    extractors |= {key[:2] for key in evaluated | heads}
    jobs: dict[str, list[Job]] = {stage: [] for stage in STAGES}
    model_jobs, feature_jobs = _extractor_jobs(config, where, extractors)
    jobs["train_extractor"], jobs["extract_features"] = sorted(model_jobs, key=_order), sorted(feature_jobs, key=_order)
    datasets |= {job.dataset for job in feature_jobs}
    for dataset in sorted(datasets):
        if is_synthetic(dataset):
            jobs["prepare"].append(Job("synthesize", dataset))
        jobs["prepare"].append(Job("prepare", dataset))
    seeds = tuple(config["seeds"])  # one job per (dataset, extractor, row) trains every seed (workflow/rules/heads.smk)
    jobs["train_head"] = [Job("train_head", ds, ex, row, seeds=seeds) for ds, ex, row in sorted({h[:3] for h in heads})]
    # one evaluate job per (dataset, extractor, row) scores every seed (workflow/rules/evaluate.smk)
    jobs["evaluate"] = [Job("evaluate", ds, ex, row, seeds=seeds) for ds, ex, row in sorted({e[:3] for e in evaluated})]
    jobs["tables_figures"] = [Job(name) for name in tables] + [Job("reproduction_summary")] + [Job(n) for n in drawn]
    return jobs


def _order(job: Job) -> tuple[str, str, str]:
    return job.dataset, job.extractor, job.stage


def _exported(where: layout.Layout, path: str, kind: str) -> tuple[str, str] | None:
    """(dataset, extractor) when `path` is a file the workflow exports (kind exported_model or exported_features),
    else None (a file from elsewhere)."""
    try:
        found, fields = layout.producer(where, path)
    except ValueError:
        return None
    return (fields["dataset"], fields["extractor"]) if found == kind else None


def _extractor_jobs(
    config: dict[str, Any], where: layout.Layout, needed: set[tuple[str, str]]
) -> tuple[set[Job], set[Job]]:
    """The jobs behind the feature files `needed` ((dataset, extractor) pairs), as the rules chain them: per origin
    (havana.layout.extractor_origin) train or import the model and extract, or import a feature file; an import that
    reads a file the workflow exports also runs that export and what it needs. Returns (model jobs, feature jobs)."""
    model_jobs: set[Job] = set()
    feature_jobs: set[Job] = set()
    features, models = list(needed), []
    done: set[tuple[str, str, str]] = set()
    while features or models:
        if features:
            dataset, extractor = features.pop()
            if (dataset, extractor, "features") in done:
                continue
            done.add((dataset, extractor, "features"))
            if layout.extractor_origin(config, extractor) == "features":
                feature_jobs.add(Job("import_features", dataset, extractor))
                source = _exported(where, extractor_config(config, extractor).features, "exported_features")
                if source is not None:
                    feature_jobs.add(Job("export_features", *source))
                    features.append(source)
            else:
                feature_jobs.add(Job("extract_features", dataset, extractor))
                models.append((dataset, layout.model_source(config, extractor)))
            continue
        dataset, extractor = models.pop()
        if (dataset, extractor, "model") in done:
            continue
        done.add((dataset, extractor, "model"))
        if layout.extractor_origin(config, extractor) == "import":
            model_jobs.add(Job("import_extractor", dataset, extractor))
            source = _exported(where, extractor_config(config, extractor).import_.checkpoint, "exported_model")
            if source is not None:
                model_jobs.add(Job("export_extractor", *source))
                models.append(source)
        else:
            model_jobs.add(Job("train_extractor", dataset, extractor))
    return model_jobs, feature_jobs


# ------------------------------------------------------------------------------------------------------ datasets


def split_sizes(config: dict[str, Any], dataset: str) -> dict[str, tuple[int, int]]:
    """(ids, images) per split as the manifest will hold them: official statistics, or the synthetic render plan."""
    from havana.data import synthetic
    from havana.data.datasets import get_dataset

    if is_synthetic(dataset):
        settings = synthetic.SynthConfig(**config["datasets"][dataset]["synth"])
        return {split: tuple(value) for split, value in synthetic.statistics(synthetic.plan(settings)).items()}
    registry = get_dataset(dataset)()
    statistics = registry.expected_statistics(None)
    if statistics is None:
        raise HavanaError(f"dataset '{dataset}' has no official statistics, so its size cannot be planned.")
    return statistics


# -------------------------------------------------------------------------------------------------------- shapes


def state_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's state dict as torch.save writes it (tensor data + a record per tensor)."""
    state = module.state_dict()
    return sum(t.numel() * t.element_size() + TORCH_SAVE_BYTES_PER_TENSOR for t in state.values())


def adam_checkpoint_bytes(module: torch.nn.Module) -> int:
    """A training checkpoint: the state dict plus Adam's two moments of every trainable parameter."""
    moments = sum(
        2 * (p.numel() * p.element_size() + TORCH_SAVE_BYTES_PER_TENSOR) for p in module.parameters() if p.requires_grad
    )
    return state_bytes(module) + moments


def features_bytes(sizes: dict[str, tuple[int, int]], views: int, dim: int) -> int:
    """The HDF5 feature file: float32 [N, V, D] per split in the writer's whole chunks, pids, camids and paths."""
    total = HDF5_FIXED_BYTES
    for split in SPLITS:
        rows = sizes[split][1]
        split_views = views if split == "train" else FLIP_VIEWS
        chunk = feature_chunk_rows(split_views, dim)
        total += math.ceil(rows / chunk) * chunk * split_views * dim * FLOAT_BYTES
        total += (
            math.ceil(rows / INDEX_CHUNK_ROWS) * INDEX_CHUNK_ROWS * (8 + 8 + VLEN_HANDLE_BYTES)
        )  # pids, camids, paths
        total += rows * PATH_BYTES
    return total


def _meta_extractor(config: ExtractorConfig, num_classes: int) -> torch.nn.Module:
    from havana.models.extractor import build_extractor

    with torch.device("meta"):  # shapes only: no ImageNet download, no memory
        return build_extractor(replace(config, pretrained=False, weights=None), num_classes).eval()


def _model_settings(config: dict[str, Any], source: str) -> ExtractorConfig:
    """The settings the model of extractors entry `source` is built with: its own, or for an imported checkpoint its
    framework's (havana.models.importing.imported_config)."""
    settings = extractor_config(config, source)
    if settings.import_ is None:
        return settings
    from havana.models.importing import imported_config

    source_settings = settings.import_
    return imported_config(source_settings.format, settings.arch, settings.image_size, source_settings.last_stride)


def _imported_shape(
    config: dict[str, Any], where: layout.Layout, job: Job, dims: dict[tuple[str, str], int]
) -> tuple[int, int]:
    """(train views, feature width) of an imported feature file: its source extractor's when the workflow exports it,
    else read from the file (which must then exist)."""
    path = extractor_config(config, job.extractor).features
    source = _exported(where, path, "exported_features")
    if source is not None:
        return extractor_config(config, source[1]).extraction.views, dims[source]
    if not Path(path).is_file():
        raise HavanaError(f"extractors.{job.extractor}.features names {path}, which does not exist; place it there.")
    if Path(path).suffix.lower() == ".npz":
        import numpy as np

        with np.load(path, mmap_mode="r") as archive:
            shape = archive["train_features"].shape
    else:
        import h5py

        with h5py.File(path, "r") as h5:
            shape = h5["train"]["features"].shape
    return (shape[1] if len(shape) == 3 else 1), int(shape[-1])


def extractor_forward_flops(model: torch.nn.Module, image_size: Iterable[int]) -> int:
    """FLOPs of one image's forward pass (2 per multiply-add), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, *image_size, device="meta"))
    return counter.get_total_flops()


def head_step_flops(head: torch.nn.Module, batch: int) -> int:
    """Matmul FLOPs of one training step: forward + weight and input gradients of every Linear (6 per weight)."""
    return sum(
        6 * batch * module.in_features * module.out_features
        for module in head.modules()
        if isinstance(module, torch.nn.Linear)
    )


def batches_per_epoch(images: int, ids: int, p: int, k: int) -> int:
    """P x K batches of one epoch (havana.data.sampler): each identity's images in chunks of K (at least one), P
    chunks per batch. With only the totals known, an identity of n images is taken to give (n - (K-1)/2) / K chunks
    (floor(n / K) averaged over n spread across K values)."""
    chunks = max(ids, round((images - ids * (k - 1) / 2) / k))
    return max(1, math.ceil(chunks / p))


# ------------------------------------------------------------------------------------------------------ estimate


def _hours(work: float, device_kind: str, name: str) -> float:
    """Hours of `work` on `device_kind`: work / rate for a rate (FLOP/s, B/s), work x cost for a cost (s/job, s/call,
    s/output, steps)."""
    rate = costs.rate(device_kind, name)
    return (work / rate.value if rate.unit.endswith("/s") else work * rate.value) / 3600


def head_step_seconds(device_kind: str, counts: StepCounts, flops: float) -> float:
    """Seconds of one stacked head step (havana.engine.train_head) with its ATen calls and bytes `counts` and the
    heads' matmul `flops`: the calls' overhead plus the device's work (FLOPs and bytes at its rates), one after the
    other on a CPU, the longer of the two where the host launches while the device computes (a GPU); slowed by
    `busy_head` (the other jobs on the machine)."""
    host = 3600 * _hours(counts.calls, device_kind, "head_call")
    device = 3600 * (_hours(flops, device_kind, "head_matmul") + _hours(counts.bytes, device_kind, "head_memory"))
    step = max(host, device) if costs.OVERLAPPED[device_kind] else host + device
    return step * costs.rate(device_kind, "busy_head").value


def head_job_seconds(
    device_kind: str, row: RowConfig, train: HeadTrainConfig, dim: int, ids: int, images: int, heads: int, flops: int
) -> float:
    """Seconds of one train_head job: its fixed cost, then per epoch the stacked steps of its `heads` heads (`flops`:
    one head's step, head_step_flops) and every head's diagnostics (havana.engine.train_head.epoch_diagnostics:
    `head_diagnostics` stacked steps in all)."""
    stacked = head_step_seconds(device_kind, step_counts(row, train, dim, ids, heads), heads * flops)
    per_epoch = batches_per_epoch(images, ids, train.p, train.k) * stacked + 3600 * _hours(
        stacked, device_kind, "head_diagnostics"
    )
    return 3600 * _hours(1, device_kind, "head_job") + train.epochs * per_epoch


def make_plan(config: dict[str, Any], device_kinds: Iterable[str] = (costs.H100, costs.CPU)) -> Plan:
    """Per-stage jobs, hours per device kind, and bytes kept and written for `snakemake all` under `config`."""
    kinds = list(device_kinds)
    for kind in kinds:
        if kind not in costs.RATES:
            raise HavanaError(f"no rates for device kind '{kind}'; known: {', '.join(costs.RATES)}.")
    jobs = planned_jobs(config)
    estimates = {
        stage: StageEstimate(stage, len(jobs[stage]), {kind: 0.0 for kind in kinds}, uses_gpu=stage in GPU_STAGES)
        for stage in STAGES
    }
    sizes = {job.dataset: split_sizes(config, job.dataset) for job in jobs["prepare"]}
    for split in sizes.values():
        estimates["prepare"].kept += sum(images for _, images in split.values()) * MANIFEST_ROW_BYTES
    estimates["prepare"].written = estimates["prepare"].kept

    dims: dict[tuple[str, str], int] = {}
    forward_flops: dict[tuple, int] = {}  # the trunk's work does not depend on the dataset: count it once per shape
    trained = {(job.dataset, job.extractor) for job in jobs["train_extractor"] if job.stage == "train_extractor"}
    imported = {(job.dataset, job.extractor) for job in jobs["train_extractor"] if job.stage == "import_extractor"}
    for job in jobs["extract_features"]:
        if job.stage != "extract_features":
            continue  # an imported or exported feature file: no extractor runs
        source = layout.model_source(config, job.extractor)
        settings, views = _model_settings(config, source), extractor_config(config, job.extractor).extraction.views
        split = sizes[job.dataset]
        ids, images = split["train"]
        model = _meta_extractor(settings, ids)
        dims[(job.dataset, job.extractor)] = model.feature_dim
        shape = (settings.arch, settings.last_stride, tuple(settings.image_size))
        if shape not in forward_flops:
            forward_flops[shape] = extractor_forward_flops(model, settings.image_size)
        forward = forward_flops[shape]
        extraction = images * views + (split["query"][1] + split["gallery"][1]) * FLIP_VIEWS
        for kind in kinds:
            estimates["extract_features"].hours[kind] += _hours(1, kind, "torch_job") + _hours(
                forward * extraction, kind, "extractor_forward"
            )
        model_bytes = state_bytes(model)
        if (job.dataset, source) in imported:  # a converted checkpoint: written, never trained
            imported.discard((job.dataset, source))
            estimates["train_extractor"].kept += model_bytes
            estimates["train_extractor"].written += model_bytes
        if (job.dataset, source) in trained:  # each trained model counted once
            trained.discard((job.dataset, source))
            train = settings.train
            seen = batches_per_epoch(images, ids, train.p, train.k) * train.p * train.k * train.epochs
            job_hours = {
                kind: _hours(1, kind, "extractor_job")
                + _hours(3 * forward * seen, kind, "extractor_train") * costs.rate(kind, "busy_extractor").value
                for kind in kinds
            }
            for kind in kinds:
                estimates["train_extractor"].hours[kind] += job_hours[kind]
            checkpoint_bytes = adam_checkpoint_bytes(model)
            checkpoints = checkpoints_written(3600 * job_hours[kinds[0]], train.checkpoint_minutes, train.epochs)
            estimates["train_extractor"].kept += model_bytes
            estimates["train_extractor"].written += model_bytes + checkpoints * checkpoint_bytes
        file_bytes = features_bytes(split, views, model.feature_dim)
        estimates["extract_features"].kept += file_bytes
        estimates["extract_features"].written += file_bytes
    where = layout.Layout.of(config)
    for job in jobs["extract_features"]:
        if job.stage == "import_features":  # written by the import, in havana's schema
            views, dims[(job.dataset, job.extractor)] = _imported_shape(config, where, job, dims)
            file_bytes = features_bytes(sizes[job.dataset], views, dims[(job.dataset, job.extractor)])
            estimates["extract_features"].kept += file_bytes
            estimates["extract_features"].written += file_bytes

    train = from_mapping(HeadTrainConfig, config.get("heads", {}).get("train", {}) or {}, "heads.train")
    for job in jobs["train_head"]:
        row = resolve_row(config, job.row, job.dataset)
        ids, images = sizes[job.dataset]["train"]
        with torch.device("meta"):
            head = build_head(dims[(job.dataset, job.extractor)], ids, row, train)
        heads, dim = len(job.seeds), dims[(job.dataset, job.extractor)]
        flops = head_step_flops(head, train.p * train.k)
        job_hours = {kind: head_job_seconds(kind, row, train, dim, ids, images, heads, flops) / 3600 for kind in kinds}
        for kind in kinds:
            estimates["train_head"].hours[kind] += job_hours[kind]
        kept = heads * (state_bytes(head) + (train.epochs + 1) * HISTORY_ROW_BYTES)
        checkpoints = checkpoints_written(3600 * job_hours[kinds[0]], train.checkpoint_minutes, train.epochs)
        estimates["train_head"].kept += kept
        estimates["train_head"].written += kept + checkpoints * heads * adam_checkpoint_bytes(head)  # one per job

    for job in jobs["evaluate"]:
        split = sizes[job.dataset]
        dim = dims[(job.dataset, job.extractor)]
        scored = 1 if job.row == BASELINE else len(job.seeds)  # the raw features are scored once for every seed
        work = scored * 2 * 2 * split["query"][1] * split["gallery"][1] * dim  # plain, flip; 2 FLOP per multiply-add
        for kind in kinds:
            estimates["evaluate"].hours[kind] += (
                _hours(1, kind, "evaluate_job")
                + (0.0 if job.row == BASELINE else _hours(len(job.seeds), kind, "evaluate_head"))
                + _hours(work, kind, "evaluate")
            )
        estimates["evaluate"].kept += len(job.seeds) * METRICS_BYTES
    estimates["evaluate"].written = estimates["evaluate"].kept
    figures = sum(1 for job in jobs["tables_figures"] if job.stage.startswith("fig"))
    for kind in kinds:
        estimates["tables_figures"].hours[kind] = _hours(figures, kind, "figure_job") + _hours(
            len(jobs["tables_figures"]) - figures, kind, "table_job"
        )
    for kind in kinds:  # rendering and preparing run no torch: a table job's start-up and little work each
        estimates["prepare"].hours[kind] += _hours(len(jobs["prepare"]), kind, "table_job")
    moves = [
        job
        for stage in ("train_extractor", "extract_features")
        for job in jobs[stage]
        if job.stage not in ("train_extractor", "extract_features")
    ]  # imports and exports: a torch job's start-up, no training
    for job in moves:
        stage = "train_extractor" if job.stage.endswith("extractor") else "extract_features"
        for kind in kinds:
            estimates[stage].hours[kind] += _hours(1, kind, "torch_job")
    estimates["tables_figures"].kept = figures * FIGURE_BYTES + (len(jobs["tables_figures"]) - figures) * TABLE_BYTES
    estimates["tables_figures"].written = estimates["tables_figures"].kept
    notes = [
        f"{kind}: {name} {'measured' if rate.measured else 'EXTRAPOLATED'} - {rate.source}"
        for kind in kinds
        for name, rate in costs.RATES[kind].items()
    ]
    return Plan([estimates[stage] for stage in STAGES], kinds, notes)


# -------------------------------------------------------------------------------------------------------- report


def _size(count: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _hours_text(hours: float) -> str:
    return f"{hours:.1f}" if hours >= 10 else f"{hours:.2f}" if hours >= 0.1 else f"{hours * 60:.1f} min"


def format_plan(plan: Plan) -> str:
    """The plan as a plain-text table: one line per stage and the total, then where every rate comes from."""
    kinds = plan.device_kinds
    header = (
        f"{'stage':<18}{'jobs':>6}" + "".join(f"{kind + ' h':>12}" for kind in kinds) + f"{'kept':>12}{'written':>12}"
    )
    lines = [header, "-" * len(header)]
    for stage in [*plan.stages, plan.total()]:
        if stage.stage == "total":
            lines.append("-" * len(header))
        hours = "".join(f"{_hours_text(stage.hours.get(kind, 0.0)):>12}" for kind in kinds)
        marker = "" if stage.uses_gpu or stage.stage == "total" else " (CPU)" if any(stage.hours.values()) else ""
        lines.append(
            f"{stage.stage:<18}{stage.jobs:>6}{hours}{_size(stage.kept):>12}{_size(stage.written):>12}{marker}"
        )
    lines.append("")
    lines.append(
        "hours: device-hours of each stage's jobs run one at a time; the total counts the GPU stages only "
        "(evaluate runs on CPU cores). Disk: results/ only."
    )
    lines.extend(plan.notes)
    return "\n".join(lines)


def measured_kept(config: dict[str, Any], root: str | os.PathLike = ".") -> dict[str, int]:
    """The bytes the finished jobs of a run really left: each GPU stage's models, feature files and heads (trained or
    imported; the exports the demo imports back are not counted), summed per stage."""
    where = layout.Layout(str(Path(root) / config["results_dir"]))
    jobs = planned_jobs(config)
    outputs = {
        "train_extractor": [
            where.model(job.dataset, job.extractor)
            for job in jobs["train_extractor"]
            if job.stage in ("train_extractor", "import_extractor")
        ],
        "extract_features": [
            where.features(job.dataset, job.extractor)
            for job in jobs["extract_features"]
            if job.stage in ("extract_features", "import_features")
        ],
        "train_head": [
            path
            for job in jobs["train_head"]
            for kind in layout.HEAD_FILES
            for path in where.head_files(job.dataset, job.extractor, job.row, job.seeds, kind)
        ],
    }
    return {
        stage: sum(Path(path).stat().st_size for path in paths if Path(path).is_file())
        for stage, paths in outputs.items()
    }


# Snakemake's rule of each benchmark file (its first folder under benchmarks/) -> the plan's stage.
RULE_STAGES = {
    "synthesize": "prepare",
    "prepare": "prepare",
    "train_extractor": "train_extractor",
    "import_extractor": "train_extractor",
    "export_extractor": "train_extractor",
    "extract_features": "extract_features",
    "import_features": "extract_features",
    "export_features": "extract_features",
    "train_head": "train_head",
    "evaluate": "evaluate",
    "tables": "tables_figures",
    "figures": "tables_figures",
}


def measured_stages(results_dir: str | os.PathLike) -> dict[str, tuple[int, float]]:
    """(jobs, job-seconds) per stage from the `benchmark:` files Snakemake wrote under `results_dir/benchmarks/` (its
    tab-separated table: wall seconds `s` first, then h:m:s, max RSS, I/O; one row per run of the job)."""
    found: dict[str, tuple[int, float]] = {}
    root = Path(results_dir) / "benchmarks"
    for path in sorted(root.rglob("*.tsv")):
        stage = RULE_STAGES.get(path.relative_to(root).parts[0])
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
        if stage is None or not rows:
            continue
        jobs, seconds = found.get(stage, (0, 0.0))
        found[stage] = (jobs + 1, seconds + float(rows[-1][0]))
    if not found:
        raise HavanaError(f"{root} holds no Snakemake benchmark files; run the workflow there first.")
    return found


def format_measured(plan: Plan, measured: dict[str, tuple[int, float]], kind: str = costs.CPU) -> str:
    """The plan's job-seconds on `kind` beside those measured on this machine, per stage and in total."""
    lines = [f"measured on this machine (Snakemake benchmark files) vs the plan's {kind} estimate, job-seconds:"]
    planned_total = measured_total = 0.0
    for stage in plan.stages:
        jobs, seconds = measured.get(stage.stage, (0, 0.0))
        planned = 3600 * stage.hours.get(kind, 0.0)
        planned_total, measured_total = planned_total + planned, measured_total + seconds
        ratio = f"{seconds / planned:.2f}x" if planned and seconds else "-"
        lines.append(f"  {stage.stage:<18}{jobs:>4} jobs  measured {seconds:>9.1f}  planned {planned:>9.1f}  {ratio}")
    ratio = f"{measured_total / planned_total:.2f}x" if planned_total else "-"
    lines.append(f"  {'total':<18}{'':>9}  measured {measured_total:>9.1f}  planned {planned_total:>9.1f}  {ratio}")
    return "\n".join(lines)


MEASURED = "measured"  # the device kind of a plan whose cpu hours were rescaled by `calibrated`


def stage_factors(plan: Plan, measured: dict[str, tuple[int, float]], kind: str = costs.CPU) -> dict[str, float]:
    """Per stage, measured / planned job-seconds on `kind` (stages with both): this machine's correction of the
    plan's rates, stage by stage. A run with more jobs in a stage than the plan has is not this plan's run: one
    sentence."""
    factors = {}
    for stage in plan.stages:
        if measured.get(stage.stage, (0, 0.0))[0] > stage.jobs:
            raise HavanaError(
                f"the measured run has {measured[stage.stage][0]} {stage.stage} jobs where this config plans "
                f"{stage.jobs}: give the config it was run with (--measured-config)."
            )
        planned, seconds = 3600 * stage.hours.get(kind, 0.0), measured.get(stage.stage, (0, 0.0))[1]
        if planned > 0 and seconds > 0:
            factors[stage.stage] = seconds / planned
    return factors


def calibrated(plan: Plan, factors: dict[str, float], source: str, kind: str = costs.CPU) -> Plan:
    """`plan` with a `measured` column: its `kind` hours times each stage's factor (stage_factors of a run on this
    machine; a stage that run did not measure keeps the rate's estimate), and a note saying so."""
    stages = [
        replace(stage, hours={**stage.hours, MEASURED: stage.hours.get(kind, 0.0) * factors.get(stage.stage, 1.0)})
        for stage in plan.stages
    ]
    scaled = ", ".join(f"{name} x{factor:.2f}" for name, factor in factors.items())
    note = f"{MEASURED}: the {kind} hours with this machine's rates, measured in {source}: {scaled}"
    return Plan(stages, [*plan.device_kinds, MEASURED], [*plan.notes, note])

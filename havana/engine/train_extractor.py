"""Extractor training engine (BoT recipe): P×K batches, label-smoothed CE + batch-hard triplet, Adam with warm-up and
step decay, checkpoints by wall-clock interval and on SIGTERM (havana.utils.checkpointing) with exact resume, a NaN
guard,
per-epoch MLflow metrics and a progress bar.

`DIR/checkpoint.pt` holds model, optimizer, scheduler and the RNG states of the epoch's start; written inside an
epoch it also holds the steps done, the loss sums and the RNG states after the last step. A rerun of the same job
resumes from it and ends with the same weights as an uninterrupted run (bit-identical on CPU): inside an epoch it
restores the epoch-start RNG, re-reads (without training on them) the batches already done, so that the loader and its
workers draw the same augmentations, then restores the later RNG states and goes on. `DIR/model.pt` is the
self-describing final model that `havana extract` reads; the checkpoint is removed once it exists.

`train.loader` picks how images arrive. "pil": a DataLoader decodes each image and runs `train_transform` on it, every
epoch. "decoded": the train split is decoded once into `DIR/train_images.pt` (havana.data.image_cache; kept until
model.pt exists, so a resumed job reuses it), held on the GPU when it takes at most half its free memory (else in CPU
memory, each batch copied through pinned memory), and each P×K batch is gathered from it and augmented as a whole on
the training device (havana.data.augment). That batch's draws come from a generator seeded by (seed, epoch, step)
alone, so resuming inside an epoch needs no re-reading: the batches done are skipped.
"""

from __future__ import annotations

import bisect
import functools
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from havana.data.augment import augment_batch
from havana.data.datasets import read_manifest
from havana.data.image_cache import cache_settings, load_or_decode, remove_image_cache
from havana.data.images import ManifestImages, label_map, loader_batches
from havana.data.sampler import PKSampler
from havana.data.transforms import train_transform
from havana.errors import HavanaError
from havana.layout import IMAGE_CACHE_FILE, MODEL_FILE
from havana.models.extractor import ExtractorOutput, build_extractor, save_extractor
from havana.models.extractor_config import ExtractorConfig, ExtractorTrainConfig
from havana.models.losses import batch_hard_triplet_loss, cross_entropy_label_smoothing
from havana.utils import provenance
from havana.utils.checkpointing import CHECKPOINT, Checkpointer, ignore_sigterm, restore_rng_states, rng_states
from havana.utils.device import select_device
from havana.utils.progress import Progress
from havana.utils.seeding import seed_everything
from havana.utils.tracking import job_run

TRAIN = ("accuracy", "images_per_s", "lr")  # logged as train/<name>, the losses as loss/<name>: one chart section each
GPU_CACHE_SHARE = 0.5  # the decoded images go on the GPU when they take at most this share of its free memory

# An epoch's batches: (epoch, skip, skipped) -> (images, labels) on the training device from step `skip` on, calling
# `skipped()` (which restores the RNG states after step skip - 1) before the first of them.
BatchSource = Callable[[int, int, Callable[[], None]], Iterator[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class TrainResult:
    """Where the model went and how the last epoch ended."""

    model_path: Path
    epochs: int
    last_metrics: dict[str, float]


def warmup_multistep_factor(epoch: int, train: ExtractorTrainConfig) -> float:
    """The lr multiplier of training epoch `epoch` (1-based), as BoT's WarmupMultiStepLR gives it.

    BoT's scheduler counter c is the epoch (it steps at each epoch's start; `schedule_step: epoch_end` uses c = epoch
    − 1); factor(c) = warm-up warmup_factor·(1 − c/W) + c/W for c < W, times gamma per milestone ≤ c. With BoT's
    numbers: epoch 1 trains at 0.01 + 0.99/10, epoch 10 at 1, epochs 40 and 70 at the first and second decays."""
    counter = epoch if train.schedule_step == "epoch_start" else epoch - 1
    warmup = 1.0
    if counter < train.warmup_epochs:
        alpha = counter / train.warmup_epochs
        warmup = train.warmup_factor * (1.0 - alpha) + alpha
    return warmup * train.gamma ** bisect.bisect_right(sorted(train.milestones), counter)


def lr_scheduler(optimizer: torch.optim.Optimizer, train: ExtractorTrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The engine's scheduler, stepped once after each epoch: epoch e (1-based) trains at lr·factor(e)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda index: warmup_multistep_factor(index + 1, train))


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: seed numpy and python from the worker's torch seed (set by the loader's RNG); leave
    SIGTERM to the training process."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    ignore_sigterm()


def extractor_loss(
    output: ExtractorOutput, labels: torch.Tensor, train: ExtractorTrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Label-smoothed CE over every classifier plus batch-hard triplet over every triplet feature, each term times the
    output's weight (BoT: one of each, weight 1; fast-reid's MGN: eight CE × 0.125, five triplets × 0.2); returns the
    total and its parts for logging."""
    ce = output.ce_weight * sum(
        cross_entropy_label_smoothing(logits.float(), labels, train.label_smoothing) for logits in output.logits
    )
    triplet = output.triplet_weight * sum(
        batch_hard_triplet_loss(feature.float(), labels, train.triplet_margin)[0] for feature in output.triplet_features
    )
    accuracy = (output.logits[0].argmax(dim=1) == labels).float().mean()
    return ce + triplet, {"ce": ce.item(), "triplet": triplet.item(), "accuracy": accuracy.item()}


# Settings added after checkpoints were first written, with the behaviour they had before: left out of the resume
# key while they hold it, so that a run started before they existed resumes.
_ADDED_SETTINGS = {
    (None, "stem_relu"): True,
    (None, "stem_pool"): "torchvision",
    ("transforms", "interpolation"): "bicubic",
    ("transforms", "erasing_draw"): "torchvision",
    ("transforms", "erasing_fill"): "zero",
    ("train", "schedule_step"): "epoch_end",
    ("train", "loader"): "pil",
    (None, "import_"): None,
    (None, "features"): None,
}


def _checkpoint_key(config: ExtractorConfig, seed: int, manifest_sha: str) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (the number of epochs may grow)."""
    plain = provenance.to_plain(config)
    for (group, name), before in _ADDED_SETTINGS.items():
        holder = plain if group is None else plain[group]
        if holder[name] == before:
            del holder[name]
    plain["train"] = {
        k: v for k, v in plain["train"].items() if k not in ("epochs", "num_workers", "device", "checkpoint_minutes")
    }
    plain["extraction"] = None  # extraction settings do not affect training
    return {"config_hash": provenance.config_hash(plain), "seed": seed, "manifest_sha256": manifest_sha}


def train_extractor(
    manifest: str | os.PathLike,
    config: ExtractorConfig,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    tracking_uri: str | None = None,
    experiment: str = "extractors",
    run_name: str = "train_extractor",
    tags: dict[str, str] | None = None,
) -> TrainResult:
    """Train `config`'s extractor on the manifest's train split, checkpointing into `out_dir`; write `model.pt`."""
    manifest, out_dir = Path(manifest), Path(out_dir)
    train = config.train
    rows = read_manifest(manifest)
    rows = rows[rows["split"] == "train"].reset_index(drop=True)
    if rows.empty:
        raise HavanaError(f"manifest {manifest} has no train images; check it was prepared for this dataset.")
    manifest_sha = provenance.file_sha256(manifest)
    labels = label_map(rows["pid"])
    seed_everything(seed)
    device = select_device(train.device)
    fast = device.type == "cuda" and train.amp  # bf16 autocast and channels_last only where they pay off

    model = build_extractor(config, num_classes=len(labels)).to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=train.lr, weight_decay=train.weight_decay
    )
    scheduler = lr_scheduler(optimizer, train)
    sampler = PKSampler(rows["pid"].tolist(), p=train.p, k=train.k, seed=seed)
    batches: BatchSource
    if train.loader == "pil":
        dataset = ManifestImages(manifest.parent, rows, train_transform(config.image_size, config.transforms), labels)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=train.num_workers,
            pin_memory=device.type == "cuda",
            worker_init_fn=seed_worker,
            persistent_workers=False,
        )
        batches = functools.partial(_pil_batches, loader, device)
    else:
        settings = cache_settings(manifest_sha, "train", len(rows), config.image_size, config.transforms.interpolation)
        images = load_or_decode(
            out_dir / IMAGE_CACHE_FILE, manifest.parent, rows, settings, threads=max(1, train.num_workers)
        )
        targets = torch.tensor([labels[int(pid)] for pid in rows["pid"]], dtype=torch.long, device=device)
        batches = functools.partial(
            _decoded_batches, _place_images(images, device), targets, sampler, config, seed, device
        )

    key = _checkpoint_key(config, seed, manifest_sha)
    checkpointer = Checkpointer(out_dir / CHECKPOINT, train.checkpoint_minutes)
    start_epoch, resume = 0, None
    saved = checkpointer.load(device, advice="delete it to train this extractor from the start")
    if saved is not None:
        if saved["key"] != key:
            raise HavanaError(
                f"{checkpointer.path} was written for a different config, seed or manifest; delete it "
                "to train from scratch or restore the original settings."
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_rng_states(saved["rng"])
        start_epoch, resume = saved["epoch"], saved["within"]

    def save(epoch: int, epoch_rng: dict[str, Any], within: dict[str, Any] | None, where: str) -> None:
        """Checkpoint at the start of `epoch` (0-based), or inside it after within["step"] steps."""
        checkpointer.save(
            {
                "key": key,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": epoch_rng,
                "within": within,
            },
            where,
        )

    params = {
        "extractor": provenance.to_plain(config),
        "seed": seed,
        "manifest": str(manifest),
        "manifest_sha256": manifest_sha,
        "num_classes": len(labels),
        "train_images": len(rows),
    }
    metrics: dict[str, float] = {}
    with job_run(tracking_uri, experiment, run_name, out_dir, params, tags=tags) as run, checkpointer:
        shown = Progress(
            f"train-extractor {out_dir.name}", train.epochs, unit="epoch", initial=start_epoch, every_s=0
        )  # one line per epoch in a log
        for epoch in range(start_epoch, train.epochs):
            epoch_rng = rng_states()

            def after_step(within: dict[str, Any], epoch: int = epoch, epoch_rng: dict[str, Any] = epoch_rng) -> None:
                if checkpointer.due(epoch_end=False):
                    save(epoch, epoch_rng, {**within, "rng": rng_states()}, f"epoch {epoch + 1}, step {within['step']}")

            metrics = _train_one_epoch(
                model,
                batches,
                sampler,
                optimizer,
                train,
                device,
                fast,
                epoch,
                resume if epoch == start_epoch else None,
                after_step,
            )
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            scheduler.step()
            run.log_epoch(epoch + 1, {f"{'train' if k in TRAIN else 'loss'}/{k}": v for k, v in metrics.items()})
            shown.update(1, **{("images/s" if k == "images_per_s" else k): v for k, v in metrics.items()})
            if epoch + 1 < train.epochs and checkpointer.due(epoch_end=True):
                save(epoch + 1, rng_states(), None, f"epoch {epoch + 1}")
        shown.close()
        model_path = out_dir / MODEL_FILE
        save_extractor(model_path, model, config, len(labels))
        provenance.write_beside(model_path, params)
        run.log_metrics({f"final/{k}": v for k, v in metrics.items()})
        run.log_artifact(provenance.beside(model_path))
    checkpointer.remove()
    remove_image_cache(out_dir / IMAGE_CACHE_FILE)
    return TrainResult(model_path=model_path, epochs=train.epochs, last_metrics=metrics)


def _pil_batches(
    loader: torch.utils.data.DataLoader, device: torch.device, epoch: int, skip: int, skipped: Callable[[], None]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches from step `skip` on; the first `skip` are read and dropped, so that the workers (seeded
    from the RNG restored to the epoch's start) draw the augmentations of the rest as they did the first time."""
    for step, (images, labels, _camids, _indices) in enumerate(loader_batches(loader)):
        if step < skip:
            if step + 1 == skip:
                skipped()
            continue
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def _place_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The decoded images on the CUDA training device when they take at most GPU_CACHE_SHARE of its free memory (the
    rest is for training), else where they are (CPU memory; batches go through pinned memory, `_decoded_batches`)."""
    if device.type == "cuda" and images.nbytes <= GPU_CACHE_SHARE * torch.cuda.mem_get_info(device)[0]:
        return images.to(device)
    return images


def batch_seed(seed: int, epoch: int, step: int) -> int:
    """The seed of the augmentation of batch `step` of `epoch` (0-based) in the decoded path: a function of the three
    alone, so a resumed epoch redraws no batch and no two batches share draws."""
    return int(np.random.SeedSequence([seed, epoch, step]).generate_state(1, dtype=np.uint64)[0])


def _decoded_batches(
    images: torch.Tensor,
    targets: torch.Tensor,
    sampler: PKSampler,
    config: ExtractorConfig,
    seed: int,
    device: torch.device,
    epoch: int,
    skip: int,
    skipped: Callable[[], None],
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The sampler's batches from step `skip` on, gathered from the decoded `images` and augmented on `device` with
    draws seeded by `batch_seed`; the first `skip` are not computed at all."""
    if skip:
        skipped()
    generator = torch.Generator()
    for step, indices in enumerate(sampler):
        if step < skip:
            continue
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = images[index.to(images.device)]
        if batch.device != device:
            batch = batch.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else batch.to(device)
        generator.manual_seed(batch_seed(seed, epoch, step))
        yield augment_batch(batch, config.transforms, generator), targets[index.to(device)]


def _train_one_epoch(
    model: torch.nn.Module,
    batches: BatchSource,
    sampler: PKSampler,
    optimizer: torch.optim.Optimizer,
    train: ExtractorTrainConfig,
    device: torch.device,
    fast: bool,
    epoch: int,
    resume: dict[str, Any] | None = None,
    after_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, float]:
    """One pass over the sampler's batches as `batches` gives them; returns the epoch's mean loss terms and throughput.

    `resume` (a mid-epoch checkpoint's {"step", "sums", "images", "rng"}, with the epoch-start RNG already restored)
    starts after the batches already done (the source re-reads or skips them, then the RNG states after them are
    restored) and goes on.
    `after_step({"step", "sums", "images"})` runs after every step but the last (the engine checkpoints when due)."""
    model.train()
    sampler.set_epoch(epoch)
    sums = {"loss": 0.0, "ce": 0.0, "triplet": 0.0, "accuracy": 0.0}
    images_seen, skip, started = 0, 0, time.perf_counter()
    if resume is not None:
        sums, images_seen, skip = dict(resume["sums"]), resume["images"], resume["step"]
    steps = len(sampler)
    bar = Progress(
        f"epoch {epoch + 1}/{train.epochs}", steps, unit="batch", final_line=False
    )  # in a log: a line a minute within long epochs; the epoch line follows
    source = batches(epoch, skip, lambda: restore_rng_states(resume["rng"]))
    for iteration, (images, labels) in enumerate(source, start=skip):
        if fast:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            output = model(images)
        loss, parts = extractor_loss(output, labels, train)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise HavanaError(
                f"extractor training diverged: the loss is {loss_value} at epoch {epoch + 1}, "
                f"iteration {iteration + 1}; lower the learning rate or check the images. The last "
                "checkpoint is kept."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for name, value in (("loss", loss_value), *parts.items()):
            sums[name] += value
        images_seen += len(images)
        bar.update(1, loss=loss_value, acc=parts["accuracy"])
        if after_step is not None and iteration + 1 < steps:
            after_step({"step": iteration + 1, "sums": dict(sums), "images": images_seen})
    bar.close()
    batches = max(1, len(sampler))
    metrics = {name: total / batches for name, total in sums.items()}
    metrics["images_per_s"] = images_seen / max(1e-9, time.perf_counter() - started)
    return metrics

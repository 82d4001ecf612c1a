"""Extractor training engine (BoT recipe): P×K batches, label-smoothed CE + batch-hard triplet, Adam with warm-up and
step decay, a checkpoint every epoch with exact resume, a NaN guard, per-epoch MLflow metrics and a progress bar.

`DIR/checkpoint.pt` holds model, optimizer, scheduler, sampler and RNG states after each finished epoch; a rerun of
the same job resumes from it and ends with the same weights as an uninterrupted run (bit-identical on CPU).
`DIR/model.pt` is the self-describing final model that `havana extract` reads.
"""

from __future__ import annotations

import bisect
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from havana import provenance, torch_io
from havana.atomic import atomic_path
from havana.data.datasets import read_manifest
from havana.data.images import ManifestImages, label_map, loader_batches
from havana.data.sampler import PKSampler
from havana.data.transforms import train_transform
from havana.device import select_device
from havana.errors import HavanaError
from havana.extractor_config import ExtractorConfig, ExtractorTrainConfig
from havana.losses import batch_hard_triplet_loss, cross_entropy_label_smoothing
from havana.models.extractor import ExtractorOutput, build_extractor, save_extractor
from havana.seeding import seed_everything
from havana.tracking import job_run

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"


@dataclass
class TrainResult:
    """Where the model went and how the last epoch ended."""

    model_path: Path
    epochs: int
    last_metrics: dict[str, float]


def warmup_multistep_factor(epoch: int, train: ExtractorTrainConfig) -> float:
    """The lr multiplier of `epoch` (0-based): linear warm-up from warmup_factor, then gamma at each milestone."""
    warmup = 1.0
    if epoch < train.warmup_epochs:
        alpha = epoch / train.warmup_epochs
        warmup = train.warmup_factor * (1.0 - alpha) + alpha
    return warmup * train.gamma ** bisect.bisect_right(sorted(train.milestones), epoch)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: seed numpy and python from the worker's torch seed (set by the loader's RNG)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def rng_states() -> dict[str, Any]:
    """Every RNG state an epoch draws from: python, numpy, torch CPU and CUDA."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back the RNG states saved by `rng_states`."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def extractor_loss(output: ExtractorOutput, labels: torch.Tensor, train: ExtractorTrainConfig
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of label-smoothed CE over every classifier and batch-hard triplet over every triplet feature (BoT; fast-reid
    sums MGN's eight CE and three triplet terms the same way); returns the total and its parts for logging."""
    ce = sum(cross_entropy_label_smoothing(logits.float(), labels, train.label_smoothing) for logits in output.logits)
    triplet = sum(batch_hard_triplet_loss(feature.float(), labels, train.triplet_margin)[0]
                  for feature in output.triplet_features)
    accuracy = (output.logits[0].argmax(dim=1) == labels).float().mean()
    return ce + triplet, {"ce": ce.item(), "triplet": triplet.item(), "accuracy": accuracy.item()}


def _checkpoint_key(config: ExtractorConfig, seed: int, manifest_sha: str) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (the number of epochs may grow)."""
    plain = provenance.to_plain(config)
    plain["train"] = {k: v for k, v in plain["train"].items() if k not in ("epochs", "num_workers", "device")}
    plain["extraction"] = None  # extraction settings do not affect training
    return {"config_hash": provenance.config_hash(plain), "seed": seed, "manifest_sha256": manifest_sha}


def train_extractor(manifest: str | os.PathLike, config: ExtractorConfig, out_dir: str | os.PathLike, *,
                    seed: int = 0, tracking_uri: str | None = None, experiment: str = "extractors",
                    run_name: str = "train_extractor") -> TrainResult:
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
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=train.lr,
                                 weight_decay=train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: warmup_multistep_factor(epoch, train))
    dataset = ManifestImages(manifest.parent, rows, train_transform(config.image_size, config.transforms), labels)
    sampler = PKSampler(rows["pid"].tolist(), p=train.p, k=train.k, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=train.num_workers,
                                         pin_memory=device.type == "cuda", worker_init_fn=seed_worker,
                                         persistent_workers=False)

    key = _checkpoint_key(config, seed, manifest_sha)
    checkpoint_path = out_dir / CHECKPOINT
    start_epoch = 0
    if checkpoint_path.is_file():
        saved = torch_io.load(checkpoint_path, what="training checkpoint", map_location=device, weights_only=False,
                              advice="delete it to train this extractor from the start")
        if saved["key"] != key:
            raise HavanaError(f"{checkpoint_path} was written for a different config, seed or manifest; delete it "
                              "to train from scratch or restore the original settings.")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_rng_states(saved["rng"])
        start_epoch = saved["epoch"]

    params = {"extractor": provenance.to_plain(config), "seed": seed, "manifest": str(manifest),
              "manifest_sha256": manifest_sha, "num_classes": len(labels), "train_images": len(rows)}
    metrics: dict[str, float] = {}
    with job_run(tracking_uri, experiment, run_name, out_dir, params) as run:
        for epoch in range(start_epoch, train.epochs):
            metrics = _train_one_epoch(model, loader, sampler, optimizer, train, device, fast, epoch)
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            scheduler.step()
            with atomic_path(checkpoint_path) as tmp:
                torch.save({"key": key, "epoch": epoch + 1, "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "sampler": {"seed": seed, "epoch": epoch + 1}, "rng": rng_states()}, tmp)
            run.log_epoch(epoch + 1, metrics)
        model_path = out_dir / MODEL
        save_extractor(model_path, model, config, len(labels))
        provenance.write_beside(model_path, params)
        run.log_metrics({f"final_{k}": v for k, v in metrics.items()})
        run.log_artifact(model_path.with_name(MODEL + ".provenance.yaml"))
    return TrainResult(model_path=model_path, epochs=train.epochs, last_metrics=metrics)


def _train_one_epoch(model: torch.nn.Module, loader: torch.utils.data.DataLoader, sampler: PKSampler,
                     optimizer: torch.optim.Optimizer, train: ExtractorTrainConfig, device: torch.device,
                     fast: bool, epoch: int) -> dict[str, float]:
    """One pass over the sampler's batches; returns the epoch's mean loss terms and throughput."""
    model.train()
    sampler.set_epoch(epoch)
    sums = {"loss": 0.0, "ce": 0.0, "triplet": 0.0, "accuracy": 0.0}
    images_seen, started = 0, time.perf_counter()
    bar = tqdm(loader_batches(loader), desc=f"epoch {epoch + 1}/{train.epochs}", unit="batch", total=len(loader),
               leave=False, disable=None)
    for iteration, (images, labels, _camids, _indices) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        if fast:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            output = model(images)
        loss, parts = extractor_loss(output, labels, train)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise HavanaError(f"extractor training diverged: the loss is {loss_value} at epoch {epoch + 1}, "
                              f"iteration {iteration + 1}; lower the learning rate or check the images. The last "
                              "good epoch's checkpoint is kept.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for name, value in (("loss", loss_value), *parts.items()):
            sums[name] += value
        images_seen += len(images)
        bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{parts['accuracy']:.2f}")
    batches = max(1, len(sampler))
    metrics = {name: total / batches for name, total in sums.items()}
    metrics["images_per_s"] = images_seen / max(1e-9, time.perf_counter() - started)
    return metrics

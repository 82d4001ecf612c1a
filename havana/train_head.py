"""Training engine of the HAVANA head on a feature file: P x K batches over identities, one random view per image,
Algorithm 1, checkpoints by wall-clock interval and on SIGTERM (havana.checkpointing) with exact resume, mid-epoch
included, then head.pt and history.csv; the checkpoint is removed once head.pt exists. The head is encoded and scored
elsewhere, once (havana.scoring, through `havana evaluate` and the figures that show it).

Randomness is re-seeded at the start of every epoch from (seed, epoch) - the P x K plan, the view choice and the
reparameterisation noise - so a run resumed from the checkpoint of epoch e continues exactly as if never stopped; a
mid-epoch checkpoint also holds the step, the loss sums so far and the RNG states after that step.
Loss sums stay on the device during an epoch and are read once at its end (one synchronisation per epoch).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from havana import atomic, provenance
from havana.checkpointing import CHECKPOINT, Checkpointer, restore_rng_states, rng_states
from havana.data.sampler import PKSampler
from havana.errors import HavanaError
from havana.features import FeatureFile
from havana.models.head import (DIAGNOSTICS, TERMS, HavanaHead, HeadTrainConfig, RowConfig, build_head, head_loss,
                                loss_diagnostics, save_head)
from havana.seeding import seed_everything
from havana.tracking import job_run

HISTORY_COLUMNS = ("epoch", "total", *TERMS, *DIAGNOSTICS, "lr")


@dataclass
class HeadRun:
    """Where and how one head job runs (everything the engine needs besides the features)."""

    out_dir: Path
    row_name: str
    dataset: str
    seed: int = 0
    tracking_uri: str | None = None
    run_name: str | None = None


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def make_optimizer(model: HavanaHead, train: HeadTrainConfig) -> torch.optim.Optimizer:
    """Adam (or SGD) over all head parameters; fused kernels: one pass over the parameters per step."""
    if train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=True)
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, momentum=0.9)
    raise HavanaError(f"unknown head optimizer '{train.optimizer}'; use adam or sgd.")


def _history_csv(history: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def train_one_epoch(model: HavanaHead, optimizer: torch.optim.Optimizer, features: torch.Tensor, labels: torch.Tensor,
                    sampler: PKSampler, row: RowConfig, train: HeadTrainConfig, epoch: int, seed: int,
                    resume: dict[str, Any] | None = None,
                    after_step: Callable[[int, torch.Tensor, torch.Generator], None] | None = None) -> dict[str, float]:
    """One pass of Algorithm 1 over the P x K plan of `epoch`; returns the mean of each on term and of the total.

    `resume` (a mid-epoch checkpoint's {"step", "sums", "rng"}) continues the epoch after that step; `after_step(steps
    done, loss sums, view generator)` runs after every step but the last (the engine checkpoints there when due)."""
    torch.manual_seed(_epoch_seed(seed, epoch))
    view_generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch) + 1)
    sampler.set_epoch(epoch)
    batches = [torch.as_tensor(b) for b in sampler]
    names = ["total", *(t for t in TERMS if getattr(row, t))]
    sums = torch.zeros(len(names), dtype=torch.float64, device=features.device)
    first = 0
    if resume is not None:
        first, sums = resume["step"], resume["sums"].to(features.device)
        restore_rng_states(resume["rng"], {"views": view_generator})
    model.train()
    for step in range(first, len(batches)):
        index = batches[step]
        views = torch.randint(features.shape[1], (len(index),), generator=view_generator)
        index, views = index.to(features.device), views.to(features.device)
        total, terms = head_loss(model, features[index, views], labels[index], row, train.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        sums += torch.stack([total.detach(), *(terms[n].detach() for n in names[1:])]).double()
        if after_step is not None and step + 1 < len(batches):
            after_step(step + 1, sums, view_generator)
    means = (sums / len(batches)).tolist()  # the epoch's one synchronisation
    for name, value in zip(names, means):
        if not np.isfinite(value):
            raise HavanaError(f"head training diverged: loss term '{name}' is {value} in epoch {epoch}; "
                              "lower the learning rate or check the features for NaN.")
    return dict(zip(names, means))


def epoch_diagnostics(model: HavanaHead, features: torch.Tensor, labels: torch.Tensor, sampler: PKSampler,
                      row: RowConfig, train: HeadTrainConfig, epoch: int, seed: int) -> dict[str, float]:
    """loss_diagnostics after `epoch` on the epoch's first P x K batch (view 0), with its own seeded noise inside a
    forked RNG, so training continues exactly as without it."""
    sampler.set_epoch(epoch)
    index = torch.as_tensor(next(iter(sampler))).to(features.device)
    devices = [features.device] if features.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(_epoch_seed(seed, epoch) + 2)
        return loss_diagnostics(model, features[index, 0], labels[index], row, train.label_smoothing)


def train_head(feature_file: FeatureFile, row: RowConfig, train: HeadTrainConfig, run: HeadRun,
               device: torch.device) -> dict[str, float]:
    """Train (or resume) one head, write head.pt, history.csv and provenance into run.out_dir; return the last
    epoch's mean total and terms (0 for a term the row switches off)."""
    if row.beta is None:
        raise HavanaError("the row's beta is unresolved; resolve it from heads.beta_by_dataset first.")
    seed_everything(run.seed)
    out = Path(run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = feature_file["train"]
    identities, labels = np.unique(split.pids, return_inverse=True)
    features = torch.from_numpy(split.features).to(device)
    labels_t = torch.from_numpy(labels.astype(np.int64)).to(device)
    model = build_head(features.shape[-1], len(identities), row, train).to(device)
    optimizer = make_optimizer(model, train)
    sampler = PKSampler(split.pids.tolist(), p=train.p, k=train.k, seed=run.seed)
    resolved = {"row": row, "train": replace(train, epochs=0, device="any", checkpoint_minutes=0), "seed": run.seed,
                "dataset": run.dataset, "features": dict(feature_file.attrs)}
    # epochs, device and interval excluded: resumable for longer, on another device, with another interval
    fingerprint = provenance.config_hash(resolved)
    checkpointer = Checkpointer(out / CHECKPOINT, train.checkpoint_minutes)
    history: list[dict[str, Any]] = []
    start, resume = 0, None
    state = checkpointer.load(device, advice="delete it to train this head from the start")
    if state is not None:
        if state["fingerprint"] != fingerprint:
            raise HavanaError(f"{checkpointer.path} belongs to a different configuration; delete it to start over.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history, resume = state["epoch"], state["history"], state["within"]

    def save(epoch: int, within: dict[str, Any] | None, where: str) -> None:
        """Checkpoint at the start of `epoch` (0-based), or inside it after within["step"] steps."""
        checkpointer.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                           "within": within, "history": history, "fingerprint": fingerprint}, where)

    params = {"row": row.__dict__, "train": train.__dict__, "seed": run.seed, "dataset": run.dataset,
              "extractor": feature_file.attrs.get("extractor", "")}
    run_name = run.run_name or f"{run.row_name}/seed{run.seed}"
    with job_run(run.tracking_uri, run.dataset, run_name, out, params) as tracker, checkpointer:
        bar = tqdm(range(start, train.epochs), initial=start, total=train.epochs, desc=f"head {run.row_name}",
                   unit="epoch")
        for epoch in bar:
            def after_step(step: int, sums: torch.Tensor, views: torch.Generator, epoch: int = epoch) -> None:
                if checkpointer.due(epoch_end=False):
                    save(epoch, {"step": step, "sums": sums, "rng": rng_states({"views": views})},
                         f"epoch {epoch + 1}, step {step}")

            means = train_one_epoch(model, optimizer, features, labels_t, sampler, row, train, epoch, run.seed,
                                    resume if epoch == start else None, after_step)
            means |= epoch_diagnostics(model, features, labels_t, sampler, row, train, epoch, run.seed)
            history.append({"epoch": epoch + 1, **{t: 0 for t in TERMS}, **means,
                            "lr": optimizer.param_groups[0]["lr"]})
            atomic.write_text(out / "history.csv", _history_csv(history))
            tracker.log_epoch(epoch + 1, means)
            bar.set_postfix(total=f"{means['total']:.4f}")
            if epoch + 1 < train.epochs and checkpointer.due(epoch_end=True):
                save(epoch + 1, None, f"epoch {epoch + 1}")
        save_head(out / "head.pt", model)
        provenance.write_beside(out / "head.pt", resolved | {"train": train})
        tracker.log_artifact(out / "history.csv")
    checkpointer.remove()
    return {key: history[-1][key] for key in ("total", *TERMS)} if history else {}

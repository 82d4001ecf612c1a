"""Training engine of the HAVANA head on a feature file: the seeds of one ablation row trained together, stacked.

Why stacked: one step of the paper head (2048-d) is about 235 small kernels, so on a GPU the host's dispatch, not the
device, sets the pace; N heads whose parameters are stacked along a leading dimension and stepped by one vmapped
function (torch.func: stack_module_state + functional_call + vmap(grad_and_value)) and one foreach optimiser update
launch about as many kernels as one head, each N times larger. One head alone is the case N = 1 of the same engine.

The heads are the ones each seed would give alone (tests/test_train_head.py, to 1e-6): head h is built after
seed_everything(seed_h), draws its own P x K plan (PKSampler seeded with seed_h), its own views and its own
reparameterisation noise (generators seeded from (seed_h, epoch), passed to head_loss as `noise`), and its own Adam
step count; a head whose plan is shorter than another's in an epoch is stepped with a mask (its parameters and
moments unchanged) for the remaining steps. Randomness is re-seeded at the start of every epoch, so a run resumed
from the checkpoint of epoch e continues exactly as if never stopped; a mid-epoch checkpoint also holds the step, the
loss sums so far and the generators' states after that step.

Algorithm 1 per head, checkpoints by wall-clock interval and on SIGTERM (havana.utils.checkpointing; one checkpoint
for the
job, in the first head's folder) with exact resume, then per head head.pt, history.csv, provenance and its own MLflow
run; the checkpoint is removed once every head.pt exists. Loss sums stay on the device during an epoch and are read
once at its end. The heads are encoded and scored elsewhere, once (havana.evaluation.scoring, through `havana
evaluate`).
"""

from __future__ import annotations

import copy
import csv
import io
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.optim.adam import adam as adam_update
from torch.optim.sgd import sgd as sgd_update

from havana.data.features import FeatureFile
from havana.data.sampler import PKSampler
from havana.errors import HavanaError
from havana.layout import HEAD_FILES
from havana.models.head import (
    DIAGNOSTICS,
    TERMS,
    HavanaHead,
    HeadTrainConfig,
    RowConfig,
    build_head,
    head_loss,
    loss_diagnostics,
    noise_widths,
    save_head,
)
from havana.utils import atomic, provenance
from havana.utils.checkpointing import CHECKPOINT, Checkpointer, restore_rng_states, rng_states
from havana.utils.progress import Progress
from havana.utils.seeding import seed_everything
from havana.utils.tracking import cell_tags, job_run, run_name

HISTORY_COLUMNS = ("epoch", "total", *TERMS, *DIAGNOSTICS, "lr")
ADAM_BETAS, ADAM_EPS, SGD_MOMENTUM = (0.9, 0.999), 1e-8, 0.9  # torch.optim.Adam's defaults; SGD's momentum


@dataclass
class HeadRun:
    """Where and how one head of a job runs (everything the engine needs for it besides the features)."""

    out_dir: Path
    row_name: str
    dataset: str
    seed: int = 0
    tracking_uri: str | None = None
    run_name: str | None = None  # default: tracking.run_name (row and seed first)
    table_cells: tuple[str, ...] = ()  # the table cells this head feeds ('table3:V+J'), an MLflow tag


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


class _HeadLoss(nn.Module):
    """head_loss of one row as a module call: what torch.func calls with one head's slice of the stacked weights."""

    def __init__(self, head: HavanaHead, row: RowConfig, label_smoothing: float) -> None:
        super().__init__()
        self.head, self.row, self.label_smoothing = head, row, label_smoothing

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor, noise: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return head_loss(self.head, x, labels, self.row, self.label_smoothing, noise)


class StackedHeads:
    """N heads of one row (same shapes) as stacked parameters [N, ...], keyed like a head's state dict; `loss_and_grads`
    evaluates all N losses and gradients in one vmapped call, `head(h)` is head h as a module."""

    def __init__(self, heads: Sequence[HavanaHead], row: RowConfig, label_smoothing: float) -> None:
        self.modules = list(heads)
        stacked, buffers = stack_module_state(self.modules)
        if buffers:
            raise HavanaError("a head with buffers cannot be stacked; the engine stacks parameters only.")
        self.params = {name: tensor.detach() for name, tensor in stacked.items()}
        self.noise_widths = noise_widths(row, self.modules[0].config)
        loss = _HeadLoss(copy.deepcopy(self.modules[0]).to("meta"), row, label_smoothing)

        def one_head(
            params: dict[str, torch.Tensor], x: torch.Tensor, labels: torch.Tensor, noise: dict[str, torch.Tensor]
        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            return functional_call(loss, {f"head.{name}": value for name, value in params.items()}, (x, labels, noise))

        self._step = vmap(grad_and_value(one_head, has_aux=True))

    def loss_and_grads(
        self, x: torch.Tensor, labels: torch.Tensor, noise: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        """(gradients, totals [N], {term: [N]}) of the N heads on batches x [N, B, D], labels [N, B] and noise
        {name: [N, B, width]}."""
        grads, (totals, terms) = self._step(self.params, x, labels, noise)
        return grads, totals, terms

    def head(self, index: int) -> HavanaHead:
        """Head `index` as a module holding its current weights (for diagnostics and head.pt)."""
        module = self.modules[index]
        with torch.no_grad():
            for name, parameter in module.named_parameters():
                parameter.copy_(self.params[name][index])
        return module


class StackedOptimizer:
    """torch.optim.Adam (fused, L2 weight decay, the default betas and eps) or SGD with momentum 0.9 on stacked
    parameters: one fused (Adam) or foreach (SGD) call updates every head, each head through its own views of the
    stacked tensors with its own step counts, so it is exactly torch.optim on each head alone. `step(grads, active)`
    updates only the heads where `active` [N] is True; the others (past the end of a shorter P x K plan) are left out
    of the call, so their parameters, moments and step counts stay as they were."""

    def __init__(self, params: dict[str, torch.Tensor], train: HeadTrainConfig) -> None:
        if train.optimizer not in ("adam", "sgd"):
            raise HavanaError(f"unknown head optimizer '{train.optimizer}'; use adam or sgd.")
        self.train = train
        self.names = list(params)
        self.params = [params[name] for name in self.names]
        heads = self.params[0].shape[0]
        moments = ("exp_avg", "exp_avg_sq") if train.optimizer == "adam" else ("momentum_buffer",)
        self.state = {moment: [torch.zeros_like(p) for p in self.params] for moment in moments}
        # one step count per head and tensor (torch.optim's per-parameter `step`, float32 on the parameters' device)
        self.steps = torch.zeros(heads, len(self.names), device=self.params[0].device)

    def _of(self, heads: list[int], tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The views of `heads` in stacked `tensors`, head by head."""
        return [tensor[head] for head in heads for tensor in tensors]

    def step(self, grads: dict[str, torch.Tensor], active: torch.Tensor) -> None:
        heads = [head for head, on in enumerate(active.tolist()) if on]
        params, grad = self._of(heads, self.params), self._of(heads, [grads[name] for name in self.names])
        if self.train.optimizer == "adam":
            steps = [self.steps[head, index] for head in heads for index in range(len(self.names))]
            adam_update(
                params,
                grad,
                self._of(heads, self.state["exp_avg"]),
                self._of(heads, self.state["exp_avg_sq"]),
                [],
                steps,
                fused=True,
                amsgrad=False,
                beta1=ADAM_BETAS[0],
                beta2=ADAM_BETAS[1],
                lr=self.train.lr,
                weight_decay=self.train.weight_decay,
                eps=ADAM_EPS,
                maximize=False,
            )
        else:  # a zero buffer times the momentum plus the gradient is torch's first step (the buffer = the gradient)
            self.steps[heads] += 1
            sgd_update(
                params,
                grad,
                self._of(heads, self.state["momentum_buffer"]),
                foreach=True,
                weight_decay=self.train.weight_decay,
                momentum=SGD_MOMENTUM,
                lr=self.train.lr,
                dampening=0.0,
                nesterov=False,
                maximize=False,
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps.clone(),
            **{moment: dict(zip(self.names, tensors)) for moment, tensors in self.state.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps.copy_(state["steps"])
        for moment, tensors in self.state.items():
            for name, tensor in zip(self.names, tensors):
                tensor.copy_(state[moment][name])


def _history_csv(history: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def _generators(seeds: Sequence[int], epoch: int, device: torch.device) -> dict[str, torch.Generator]:
    """Each head's generators of `epoch`: views<h> (CPU) and noise<h> (on the device), seeded from (seed_h, epoch)."""
    generators = {}
    for head, seed in enumerate(seeds):
        generators[f"views{head}"] = torch.Generator().manual_seed(_epoch_seed(seed, epoch) + 1)
        generators[f"noise{head}"] = torch.Generator(device=device).manual_seed(_epoch_seed(seed, epoch))
    return generators


def train_one_epoch(
    stack: StackedHeads,
    optimizer: StackedOptimizer,
    features: torch.Tensor,
    labels: torch.Tensor,
    samplers: Sequence[PKSampler],
    row: RowConfig,
    epoch: int,
    seeds: Sequence[int],
    resume: dict[str, Any] | None = None,
    after_step: Callable[[int, torch.Tensor, dict[str, torch.Generator]], None] | None = None,
) -> list[dict[str, float]]:
    """One pass of Algorithm 1 for every head over its P x K plan of `epoch`; per head, the mean of each on term and
    of the total.

    `resume` (a mid-epoch checkpoint's {"step", "sums", "rng"}) continues the epoch after that step; `after_step(steps
    done, loss sums, generators)` runs after every step but the last (the engine checkpoints there when due)."""
    device = features.device
    generators = _generators(seeds, epoch, device)
    plans = []
    for sampler in samplers:
        sampler.set_epoch(epoch)
        plans.append([torch.as_tensor(batch) for batch in sampler])
    lengths = torch.tensor([len(plan) for plan in plans])
    names = ["total", *(t for t in TERMS if getattr(row, t))]
    sums = torch.zeros(len(seeds), len(names), dtype=torch.float64, device=device)
    first = 0
    if resume is not None:
        first, sums = resume["step"], resume["sums"].to(device)
        restore_rng_states(resume["rng"], generators)
    for step in range(first, int(lengths.max())):
        active = step < lengths
        indices, views, noise = [], [], {name: [] for name in stack.noise_widths}
        for head, plan in enumerate(plans):
            if active[head]:
                index = plan[step]
                views.append(torch.randint(features.shape[1], (len(index),), generator=generators[f"views{head}"]))
                for name, width in stack.noise_widths.items():
                    noise[name].append(
                        torch.randn(len(index), width, generator=generators[f"noise{head}"], device=device)
                    )
            else:  # past the end of this head's plan: a stand-in batch whose update is masked out
                index = plan[0]
                views.append(torch.zeros(len(index), dtype=torch.long))
                for name, width in stack.noise_widths.items():
                    noise[name].append(torch.zeros(len(index), width, device=device))
            indices.append(index)
        index, view = torch.stack(indices).to(device), torch.stack(views).to(device)
        grads, totals, terms = stack.loss_and_grads(
            features[index, view], labels[index], {name: torch.stack(draws) for name, draws in noise.items()}
        )
        optimizer.step(grads, active)
        values = torch.stack([totals, *(terms[n] for n in names[1:])], dim=1).double()
        sums += values if bool(active.all()) else torch.where(active.to(device)[:, None], values, 0.0)
        if after_step is not None and step + 1 < int(lengths.max()):
            after_step(step + 1, sums, generators)
    means = (sums / lengths.to(device)[:, None]).tolist()  # the epoch's one synchronisation
    for seed, head_means in zip(seeds, means):
        for name, value in zip(names, head_means):
            if not np.isfinite(value):
                raise HavanaError(
                    f"head training diverged: loss term '{name}' is {value} in epoch {epoch} "
                    f"(seed {seed}); lower the learning rate or check the features for NaN."
                )
    return [dict(zip(names, head_means)) for head_means in means]


def epoch_diagnostics(
    model: HavanaHead,
    features: torch.Tensor,
    labels: torch.Tensor,
    sampler: PKSampler,
    row: RowConfig,
    train: HeadTrainConfig,
    epoch: int,
    seed: int,
) -> dict[str, float]:
    """loss_diagnostics of one head after `epoch` on its epoch's first P x K batch (view 0), with its own seeded noise
    inside a forked RNG (training draws from its own generators, so nothing it does depends on this)."""
    sampler.set_epoch(epoch)
    index = torch.as_tensor(next(iter(sampler))).to(features.device)
    devices = [features.device] if features.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(_epoch_seed(seed, epoch) + 2)
        return loss_diagnostics(model, features[index, 0], labels[index], row, train.label_smoothing)


def chart_names(means: dict[str, float]) -> dict[str, float]:
    """An epoch's means under the names MLflow logs them by, one chart section per prefix: loss/<term> (total and
    the loss terms), grad/<term> (the term's share of the gradient) and hinge/<name> (hard_pos, hard_neg, active)."""
    return {
        f"grad/{name[5:]}" if name.startswith("grad_") else f"hinge/{name}" if name in HINGE else f"loss/{name}": value
        for name, value in means.items()
    }


HINGE = ("hard_pos", "hard_neg", "active")  # loss_diagnostics' measures of the triplet hinge


def _check_runs(runs: Sequence[HeadRun]) -> None:
    if not runs:
        raise HavanaError("train-head needs at least one seed.")
    for what, values in (("seed", [run.seed for run in runs]), ("output folder", [Path(run.out_dir) for run in runs])):
        if len(set(values)) != len(values):
            raise HavanaError(f"the heads of one train-head job need distinct {what}s, got {values}.")
    if len({(run.row_name, run.dataset) for run in runs}) != 1:
        raise HavanaError("the heads of one train-head job share one row and one dataset.")


def train_heads(
    feature_file: FeatureFile, row: RowConfig, train: HeadTrainConfig, runs: Sequence[HeadRun], device: torch.device
) -> list[dict[str, float]]:
    """Train (or resume) the heads of `runs` (one per seed) stacked; write each head's head.pt, history.csv and
    provenance into its out_dir; return per head the last epoch's mean total and terms (0 for a term the row
    switches off)."""
    if row.beta is None:
        raise HavanaError("the row's beta is unresolved; resolve it from heads.beta_by_dataset first.")
    _check_runs(runs)
    seeds = [run.seed for run in runs]
    outs = [Path(run.out_dir) for run in runs]
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
    split = feature_file["train"]
    identities, labels = np.unique(split.pids, return_inverse=True)
    features = torch.from_numpy(split.features).to(device)
    labels_t = torch.from_numpy(labels.astype(np.int64)).to(device)
    heads = []
    for seed in seeds:  # each head's initial weights are those of its seed alone
        seed_everything(seed)
        heads.append(build_head(features.shape[-1], len(identities), row, train).to(device))
    stack = StackedHeads(heads, row, train.label_smoothing)
    optimizer = StackedOptimizer(stack.params, train)
    samplers = [PKSampler(split.pids.tolist(), p=train.p, k=train.k, seed=seed) for seed in seeds]
    resolved = [
        {
            "row": row,
            "train": replace(train, epochs=0, device="any", checkpoint_minutes=0),
            "seed": seed,
            "dataset": runs[0].dataset,
            "features": dict(feature_file.attrs),
        }
        for seed in seeds
    ]
    # epochs, device and interval excluded: resumable for longer, on another device, with another interval
    fingerprint = provenance.config_hash(resolved)
    checkpointer = Checkpointer(outs[0] / CHECKPOINT, train.checkpoint_minutes)
    histories: list[list[dict[str, Any]]] = [[] for _ in runs]
    start, resume = 0, None
    state = checkpointer.load(device, advice="delete it to train these heads from the start")
    if state is not None:
        if state.get("fingerprint") != fingerprint:
            raise HavanaError(
                f"{checkpointer.path} belongs to a different configuration or set of seeds; delete it to start over."
            )
        for name, tensor in stack.params.items():
            tensor.copy_(state["params"][name])
        optimizer.load_state_dict(state["optimizer"])
        start, histories, resume = state["epoch"], state["histories"], state["within"]

    def save(epoch: int, within: dict[str, Any] | None, where: str) -> None:
        """Checkpoint at the start of `epoch` (0-based), or inside it after within["step"] steps."""
        checkpointer.save(
            {
                "params": stack.params,
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "within": within,
                "histories": histories,
                "fingerprint": fingerprint,
            },
            where,
        )

    extractor = str(feature_file.attrs.get("extractor", ""))
    configuration = {  # the config_hash tag: the row, training and inputs without the seed, device or interval
        "row": row,
        "train": replace(train, device="any", checkpoint_minutes=0),
        "dataset": runs[0].dataset,
        "extractor": {"name": extractor, "config_hash": feature_file.attrs.get("config_hash")},
    }
    with ExitStack() as contexts:
        trackers = []
        for run in runs:
            params = {
                "row": row.__dict__,
                "train": train.__dict__,
                "seed": run.seed,
                "dataset": run.dataset,
                "extractor": extractor,
            }
            tags = cell_tags(run.dataset, extractor, run.row_name, run.seed, run.table_cells, configuration)
            name = run.run_name or run_name(run.row_name, run.seed, extractor, run.dataset)
            trackers.append(
                contexts.enter_context(job_run(run.tracking_uri, run.dataset, name, run.out_dir, params, tags=tags))
            )
        contexts.enter_context(checkpointer)
        shown = [
            Progress(f"train-head {run.row_name} seed{run.seed}", train.epochs, unit="epoch", initial=start, every_s=0)
            for run in runs
        ]  # one line per head and epoch in a log
        for epoch in range(start, train.epochs):

            def after_step(
                step: int, sums: torch.Tensor, generators: dict[str, torch.Generator], epoch: int = epoch
            ) -> None:
                if checkpointer.due(epoch_end=False):
                    save(
                        epoch,
                        {"step": step, "sums": sums, "rng": rng_states(generators)},
                        f"epoch {epoch + 1}, step {step}",
                    )

            started = time.perf_counter()
            means = train_one_epoch(
                stack,
                optimizer,
                features,
                labels_t,
                samplers,
                row,
                epoch,
                seeds,
                resume if epoch == start else None,
                after_step,
            )
            seconds = max(1e-9, time.perf_counter() - started)
            for head, run in enumerate(runs):
                head_means = means[head] | epoch_diagnostics(
                    stack.head(head), features, labels_t, samplers[head], row, train, epoch, run.seed
                )
                histories[head].append({"epoch": epoch + 1, **{t: 0 for t in TERMS}, **head_means, "lr": train.lr})
                atomic.write_text(outs[head] / HEAD_FILES["history"], _history_csv(histories[head]))
                trackers[head].log_epoch(epoch + 1, chart_names(head_means))
                images_per_s = len(samplers[head]) * train.p * train.k / seconds  # this head's share of the epoch
                shown[head].update(1, **head_means, lr=train.lr, **{"images/s": round(images_per_s)})
            if epoch + 1 < train.epochs and checkpointer.due(epoch_end=True):
                save(epoch + 1, None, f"epoch {epoch + 1}")
        for head in range(len(runs)):
            shown[head].close()
            save_head(outs[head] / HEAD_FILES["head"], stack.head(head))
            provenance.write_beside(outs[head] / HEAD_FILES["head"], resolved[head] | {"train": train})
            trackers[head].log_artifact(outs[head] / HEAD_FILES["history"])
    checkpointer.remove()
    return [{key: history[-1][key] for key in ("total", *TERMS)} if history else {} for history in histories]

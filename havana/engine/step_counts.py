"""What one stacked head-training step asks of a device, counted on the engine's own step: ATen calls and the bytes
of their operands and results (issue 22). `havana plan` turns the counts into seconds per device kind
(havana.dag.costs) and benchmarks/head_kernels.py prints them at paper scale.

Why counts: a step of these heads is bound by per-call overhead (CPU dispatch, GPU kernel launches) and by memory
traffic as much as by FLOPs, and neither shows in a FLOP count. Each ATen call is one kernel (or a few) on a GPU; its
tensors' bytes are what memory moves (an upper bound: a fused kernel moves fewer). Views are left out (their results
alias their inputs). The count of calls does not depend on the feature width, and the bytes are a quadratic in it
for a fixed batch and number of identities (weights and Adam's moments grow with width², activations with width),
so `step_counts` counts real steps at three small widths on the CPU and evaluates the quadratic through them at
the wanted width: exact, and milliseconds instead of a paper-width step.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import astuple, dataclass

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from havana.engine.train_head import StackedHeads, StackedOptimizer
from havana.errors import HavanaError
from havana.models.head import HeadTrainConfig, RowConfig, build_head

PROBE_WIDTHS = (8, 16, 32)  # three widths fix the quadratic of bytes in the width


class CountKernels(TorchDispatchMode):
    """Counts ATen calls that compute (views excluded) and the bytes of their tensor operands and results."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if any(ret.alias_info is not None for ret in func._schema.returns):
            return result
        self.calls[str(func.overloadpacket)] += 1
        tensors = [t for t in tree_flatten((args, kwargs, result))[0] if isinstance(t, torch.Tensor)]
        self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        return result


@dataclass(frozen=True)
class StepCounts:
    """One stacked step of `heads` heads: ATen calls and bytes moved (the Adam update included)."""

    calls: int
    bytes: float


@dataclass
class RandomStep:
    """One stacked training step of fresh heads (the engine's StackedHeads and StackedOptimizer) on a fixed random
    batch; calling it steps once: the real step, to count (count_step) and to time (benchmarks/job_costs.py)."""

    stack: StackedHeads
    optimizer: StackedOptimizer
    features: torch.Tensor  # [heads, batch, dim]
    labels: torch.Tensor  # [heads, batch]
    noise: dict[str, torch.Tensor]
    active: torch.Tensor  # [heads], all True: every head steps

    @classmethod
    def build(cls, row: RowConfig, train: HeadTrainConfig, dim: int, ids: int, heads: int) -> RandomStep:
        """Heads and batch drawn from seed 0 (P x K labels over `ids` identities), whatever the global RNG holds."""
        generator = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            stack = StackedHeads([build_head(dim, ids, row, train) for _ in range(heads)], row, train.label_smoothing)
        batch = train.p * train.k
        labels = torch.arange(batch).div(train.k, rounding_mode="floor").remainder(ids).expand(heads, batch)
        features = torch.randn(heads, batch, dim, generator=generator)
        noise = {n: torch.randn(heads, batch, width, generator=generator) for n, width in stack.noise_widths.items()}
        active = torch.ones(heads, dtype=torch.bool)
        return cls(stack, StackedOptimizer(stack.params, train), features, labels, noise, active)

    def __call__(self) -> None:
        grads, _, _ = self.stack.loss_and_grads(self.features, self.labels, self.noise)
        self.optimizer.step(grads, self.active)


def count_step(
    row: RowConfig, train: HeadTrainConfig, dim: int, ids: int, heads: int, warm_up: bool = True
) -> CountKernels:
    """The calls and bytes of one real stacked step, random features; with `warm_up` after an uncounted step (what is
    built once per process, such as the JS table, is then not counted)."""
    step = RandomStep.build(row, train, dim, ids, heads)
    if warm_up:
        step()
    counter = CountKernels()
    with counter:
        step()
    return counter


def step_counts(row: RowConfig, train: HeadTrainConfig, dim: int, ids: int, heads: int) -> StepCounts:
    """Calls and bytes of one stacked step at feature width `dim`, from real steps at PROBE_WIDTHS (module docstring);
    the noise widths follow the feature width (latent and variation sizes default to it). Cached per process."""
    return _step_counts(astuple(row), astuple(train), dim, ids, heads)


@functools.lru_cache(maxsize=256)
def _step_counts(row: tuple, train: tuple, dim: int, ids: int, heads: int) -> StepCounts:
    row_config, train_config = RowConfig(*row), HeadTrainConfig(*train)
    counted = [
        count_step(row_config, train_config, width, ids, heads, warm_up=index == 0)
        for index, width in enumerate(PROBE_WIDTHS)
    ]
    calls = {sum(c.calls.values()) for c in counted}
    if len(calls) != 1:
        raise HavanaError(
            f"a head step's ATen calls depend on its width ({sorted(calls)}), so step_counts' probe cannot "
            "stand for it; count a step at the wanted width (count_step)."
        )
    coefficients = np.polyfit(np.array(PROBE_WIDTHS, dtype=float), [c.bytes for c in counted], 2)
    return StepCounts(calls=calls.pop(), bytes=float(np.polyval(coefficients, dim)))

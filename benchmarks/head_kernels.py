"""Benchmark: what one stacked head-training step asks of a device, counted on the CPU: ATen kernels launched and bytes
they read and write, per row of the paper (3 seeds stacked, 2048-d, 751 ids, P16 x K4).

A GPU step of these heads is bound by kernel launches and memory traffic, not by FLOPs (issue 22): each ATen call is
one kernel (or a few) on a GPU, and its tensors' bytes are what HBM moves. Counted with a TorchDispatchMode over the
engine's own step (havana.engine.train_head: the vmapped loss and gradients, then the stacked Adam step); bytes are
the sizes of every operand and result of each call (an upper bound: a fused kernel moves fewer). No timing: the
counts are the same on any machine.
Usage: python benchmarks/head_kernels.py [--heads 3] [--dim 2048] [--ids 751]
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from havana.engine.train_head import StackedHeads, StackedOptimizer
from havana.models.head import HeadTrainConfig, RowConfig, build_head

ROWS = {
    "havana": RowConfig(constraint=True, reconz=True, klv=True, beta=1.0),
    "vnae_jst": RowConfig(beta=1.0),
    "vnae (Euclidean triplet)": RowConfig(triplet=True, jst=False, beta=1.0),
}


class CountKernels(TorchDispatchMode):
    """Counts ATen calls that compute (views, which only relabel memory, are left out: their results alias their
    inputs) and the bytes of their tensor operands and results."""

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


def count_step(row: RowConfig, heads: int, dim: int, ids: int) -> CountKernels:
    """Kernels and bytes of one stacked training step (after a warm-up step that builds the JS table)."""
    train = HeadTrainConfig()
    torch.manual_seed(0)
    stack = StackedHeads([build_head(dim, ids, row, train) for _ in range(heads)], row, train.label_smoothing)
    optimizer = StackedOptimizer(stack.params, train)
    batch = train.p * train.k
    features = torch.randn(ids * train.k, 2, dim)
    labels = torch.arange(ids * train.k) // train.k
    generators = [torch.Generator().manual_seed(head) for head in range(heads)]
    active = torch.ones(heads, dtype=torch.bool)

    def step() -> None:
        index = torch.randint(len(labels), (heads, batch))
        views = torch.randint(2, (heads, batch))
        noise = {
            name: torch.stack([torch.randn(batch, width, generator=g) for g in generators])
            for name, width in stack.noise_widths.items()
        }
        grads, _, _ = stack.loss_and_grads(features[index, views], labels[index], noise)
        optimizer.step(grads, active)

    step()
    counter = CountKernels()
    with counter:
        step()
    return counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--ids", type=int, default=751)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"one stacked step of {args.heads} heads, {args.dim}-d, {args.ids} ids, P16 x K4 (torch {torch.__version__})")
    for name, row in ROWS.items():
        counted = count_step(row, args.heads, args.dim, args.ids)
        top = ", ".join(f"{op.split('.')[-1]} {n}" for op, n in counted.calls.most_common(5))
        print(
            f"  {name:26s} {sum(counted.calls.values()):5d} ATen calls, {counted.bytes / 1e9:6.2f} GB of operands "
            f"and results; most called: {top}"
        )


if __name__ == "__main__":
    main()

"""Benchmark: what one stacked head-training step asks of a device, counted on the CPU: ATen kernels launched and bytes
they read and write, per row of the paper (3 seeds stacked, 2048-d, 751 ids, P16 x K4).

A GPU step of these heads is bound by kernel launches and memory traffic, not by FLOPs (issue 22): each ATen call is
one kernel (or a few) on a GPU, and its tensors' bytes are what HBM moves. Counted by havana.engine.step_counts (the
counter `havana plan` uses) over the engine's own step (havana.engine.train_head: the vmapped loss and gradients,
then the stacked Adam step); bytes are the sizes of every operand and result of each call (an upper bound: a fused
kernel moves fewer). No timing: the counts are the same on any machine.
Usage: python benchmarks/head_kernels.py [--heads 3] [--dim 2048] [--ids 751]
"""

from __future__ import annotations

import argparse

import torch

from havana.engine.step_counts import count_step
from havana.models.head import HeadTrainConfig, RowConfig

ROWS = {
    "havana": RowConfig(constraint=True, reconz=True, klv=True, beta=1.0),
    "vnae_jst": RowConfig(beta=1.0),
    "vnae (Euclidean triplet)": RowConfig(triplet=True, jst=False, beta=1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--ids", type=int, default=751)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"one stacked step of {args.heads} heads, {args.dim}-d, {args.ids} ids, P16 x K4 (torch {torch.__version__})")
    for name, row in ROWS.items():
        counted = count_step(row, HeadTrainConfig(), args.dim, args.ids, args.heads)
        top = ", ".join(f"{op.split('.')[-1]} {n}" for op, n in counted.calls.most_common(5))
        print(
            f"  {name:26s} {sum(counted.calls.values()):5d} ATen calls, {counted.bytes / 1e9:6.2f} GB of operands "
            f"and results; most called: {top}"
        )


if __name__ == "__main__":
    main()

"""Benchmark: paper-size HAVANA head training steps (2048-d, all terms on, 751 ids, P16 x K4, 12,936 x V features).

1. N heads stacked (havana.engine.train_head's engine: one vmapped step and one foreach Adam for all N) against the
same N
   heads one at a time (the engine with one head, N times), in heads x samples/s, and their ratio; the same at a small
   width (--small-dim), where the step is bound by per-kernel overhead as the paper head is on a GPU (issue 11).
2. One head in plain eager PyTorch (module, backward, fused torch.optim.Adam): samples/s and the Linear layers'
   achieved matmul FLOP/s (forward + backward, counted per layer) as a fraction of torch.mm's FLOP/s on the same
   shapes measured in the same run.
Random features: the speed does not depend on them.
Usage: python benchmarks/head.py [--device cpu|cuda] [--steps 10] [--views 2] [--heads 3] [--small-dim 64]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from havana.data.sampler import PKSampler
from havana.engine.train_head import StackedHeads, StackedOptimizer
from havana.models.head import HeadTrainConfig, RowConfig, build_head, head_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def linear_shapes(model: nn.Module, batch: int) -> list[tuple[tuple[int, int], tuple[int, int], bool]]:
    """(in, out) per Linear with whether its input needs a gradient (only f_mu/f_sigma's first layers read x)."""
    shapes = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            reads_x = name in ("f_mu.0", "f_sigma.0")
            shapes.append((module.in_features, module.out_features, not reads_x))
    return shapes


def matmul_calls(shapes, batch: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The matmuls of one training step: forward, weight gradient and (where needed) input gradient per Linear."""
    calls = []
    for fan_in, fan_out, input_grad in shapes:
        calls.append(((batch, fan_in), (fan_in, fan_out)))  # forward
        calls.append(((fan_out, batch), (batch, fan_in)))  # weight gradient
        if input_grad:
            calls.append(((batch, fan_out), (fan_out, fan_in)))  # input gradient
    return calls


def time_mm(calls, device: torch.device, repeats: int) -> float:
    """Seconds for one pass of torch.mm over `calls` (median-free: the mean of `repeats` passes after a warm-up)."""
    operands = [(torch.randn(a, device=device), torch.randn(b, device=device)) for a, b in calls]
    for a, b in operands:
        torch.mm(a, b)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        for a, b in operands:
            torch.mm(a, b)
    _sync(device)
    return (time.perf_counter() - start) / repeats


def stacked_seconds(
    heads: int, dim: int, ids: int, row: RowConfig, train: HeadTrainConfig, steps: int, device: torch.device
) -> float:
    """Seconds per step of `heads` heads stacked in the training engine (batch gather, per-head noise draws, one
    vmapped loss-and-gradient call, one stacked Adam step), after two warm-up steps."""
    torch.manual_seed(0)
    stack = StackedHeads(
        [build_head(dim, ids, row, train).to(device) for _ in range(heads)], row, train.label_smoothing
    )
    optimizer = StackedOptimizer(stack.params, train)
    batch = train.p * train.k
    features = torch.randn(ids * train.k, 2, dim, device=device)
    labels = torch.arange(ids * train.k, device=device) // train.k
    generators = [torch.Generator(device=device).manual_seed(head) for head in range(heads)]
    active = torch.ones(heads, dtype=torch.bool)

    def step() -> None:
        index = torch.randint(len(labels), (heads, batch), device=device)
        views = torch.randint(2, (heads, batch), device=device)
        noise = {
            name: torch.stack([torch.randn(batch, width, generator=g, device=device) for g in generators])
            for name, width in stack.noise_widths.items()
        }
        grads, _, _ = stack.loss_and_grads(features[index, views], labels[index], noise)
        optimizer.step(grads, active)

    step(), step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def compare_stacked(
    heads: int, dim: int, ids: int, row: RowConfig, train: HeadTrainConfig, steps: int, device: torch.device
) -> float:
    """Print heads x samples/s of `heads` stacked vs one at a time at width `dim`; return the ratio."""
    batch = train.p * train.k
    alone = stacked_seconds(1, dim, ids, row, train, steps, device) * heads  # N heads, one after another
    stacked = stacked_seconds(heads, dim, ids, row, train, steps, device)
    print(
        f"{dim}-d, {ids} ids, P{train.p}xK{train.k}: {heads} heads one at a time {heads * batch / alone:.0f} "
        f"heads*samples/s ({alone / heads * 1e3:.1f} ms per head step); {heads} stacked {heads * batch / stacked:.0f} "
        f"heads*samples/s ({stacked * 1e3:.1f} ms per stacked step); ratio stacked / one at a time "
        f"{alone / stacked:.2f}"
    )
    return alone / stacked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--heads", type=int, default=3, help="heads stacked (the paper's seeds: 3)")
    parser.add_argument("--small-dim", type=int, default=64, help="the overhead-bound width (0: skip)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    num_images, num_ids, dim = 12_936, 751, 2048
    features = torch.randn(num_images, args.views, dim, device=device)
    pids = torch.arange(num_images) % num_ids
    labels = pids.to(device)
    row = RowConfig(jst=True, reconx=True, klz=True, reconz=True, klv=True, constraint=True, beta=1.0)
    train = HeadTrainConfig()
    print(f"device {device} ({torch.get_num_threads()} threads), {args.steps} steps per timing")
    compare_stacked(args.heads, dim, num_ids, row, train, args.steps, device)
    if args.small_dim:
        compare_stacked(args.heads, args.small_dim, num_ids, row, train, args.steps, device)
    model = build_head(dim, num_ids, row, train).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=True)
    sampler = PKSampler(pids.tolist(), p=train.p, k=train.k, seed=0)
    batches = [torch.as_tensor(b, device=device) for _, b in zip(range(args.steps + 2), sampler)]
    batch = len(batches[0])

    def step(index: torch.Tensor) -> torch.Tensor:
        views = torch.randint(args.views, (len(index),), device=device)
        total, _ = head_loss(model, features[index, views], labels[index], row, train.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return total.detach()

    for index in batches[:2]:  # warm-up
        step(index)
    _sync(device)
    start = time.perf_counter()
    for index in batches[2:]:
        step(index)
    _sync(device)
    step_s = (time.perf_counter() - start) / args.steps

    calls = matmul_calls(linear_shapes(model, batch), batch)
    flops = sum(2 * a[0] * a[1] * b[1] for a, b in calls)
    mm_s = time_mm(calls, device, repeats=max(3, args.steps // 2))
    achieved, peak = flops / step_s, flops / mm_s
    print(
        f"one head in eager PyTorch: batch {batch}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
    )
    print(f"step {step_s * 1e3:.1f} ms, {batch / step_s:.0f} samples/s, Linear FLOPs/step {flops / 1e9:.2f} G")
    print(
        f"achieved {achieved / 1e9:.1f} GFLOP/s vs torch.mm {peak / 1e9:.1f} GFLOP/s on the same shapes: "
        f"fraction {achieved / peak:.2f} (goal >= 0.5)"
    )


if __name__ == "__main__":
    main()

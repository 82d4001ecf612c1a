"""Benchmark: paper-size HAVANA head training steps (2048-d, all terms on, 751 ids, 12,936 x V features).

Prints samples/s and the Linear layers' achieved matmul FLOP/s (forward + backward, counted per layer) as a fraction
of torch.mm's FLOP/s on the same shapes measured in the same run. Random features: the speed does not depend on them.
Usage: python benchmarks/head.py [--device cpu|cuda] [--steps 10] [--views 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from havana.data.sampler import PKSampler
from havana.models.head import HeadTrainConfig, RowConfig, build_head, head_loss
from havana.train_head import make_optimizer


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--views", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    num_images, num_ids, dim = 12_936, 751, 2048
    features = torch.randn(num_images, args.views, dim, device=device)
    pids = torch.arange(num_images) % num_ids
    labels = pids.to(device)
    row = RowConfig(jst=True, reconx=True, klz=True, reconz=True, klv=True, constraint=True, beta=1.0)
    train = HeadTrainConfig()
    model = build_head(dim, num_ids, row, train).to(device)
    optimizer = make_optimizer(model, train)
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
    print(f"device {device} ({torch.get_num_threads()} threads), batch {batch}, {args.steps} steps, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    print(f"step {step_s * 1e3:.1f} ms, {batch / step_s:.0f} samples/s, Linear FLOPs/step {flops / 1e9:.2f} G")
    print(f"achieved {achieved / 1e9:.1f} GFLOP/s vs torch.mm {peak / 1e9:.1f} GFLOP/s on the same shapes: "
          f"fraction {achieved / peak:.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()

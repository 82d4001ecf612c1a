"""Benchmark: the JS triplet (Eq. 9, "mean_dim" reading; havana.models.losses.js_triplet_loss, JS read from the spline
table of havana/models/js_table.py) against the Euclidean batch-hard triplet, forward + backward, one process, one
thread. Goal (issue 22): at the paper's width with learned sigma, at most 10x the Euclidean triplet.

Before the table (32-node Gauss-Hermite per-dimension JS, Hellinger mining), measured on the 2-core AMD EPYC VM, torch
2.14.1 CPU, 1 thread, in one run with this script's predecessor: paper 64 x 2048 learned sigma 376-483 ms = 246-336x
the Euclidean triplet; identity 55-57 ms = 42-48x; demo 32 x 512 learned 33-36 ms = 75-85x, identity 13x.

Shapes: the paper's head (P16 x K4 = 64 samples, 2048-d) and the demo's (config/demo.yaml: P8 x K4 = 32, 512-d),
each with learned log-variances (N(0, 0.5^2)) and with identity covariances (logvar None, the covariance constraint).
Also: the table's build time at first use, and how often the mining stand-in picks the exact mean-dim JS's hardest
positive and negative (and the JS it gives up when it does not), on BNNeck-like batches.
Timings: the minimum over --repeats interleaved runs (robust to other load on the machine), and the median.
Usage: python benchmarks/js_triplet.py [--repeats 15] [--agreement-batches 5]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from havana.models import js_table, losses

LOG2 = math.log(2.0)


def bnneck_batch(ids: int, per_id: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """tests/test_losses.py's batch: BNNeck-scale means (per-dimension spread 0.5-1, identities tens apart),
    identities in look-alike pairs so that batch-hard triplets are active."""
    g = torch.Generator().manual_seed(seed)
    pairs = torch.randn(ids // 2, dim, generator=g) * 0.6
    centers = pairs.repeat_interleave(2, 0) + torch.randn(ids, dim, generator=g) * 0.1
    mu = centers.repeat_interleave(per_id, 0) + torch.randn(ids * per_id, dim, generator=g) * 0.4
    return mu, torch.arange(ids).repeat_interleave(per_id)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """(min, median) seconds per call of each function, runs interleaved after one warm-up each."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: (min(v), statistics.median(v)) for name, v in samples.items()}


def step(loss_fn: Callable, mu: torch.Tensor, logvar: torch.Tensor | None, pids: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of loss_fn on fresh leaves."""

    def run() -> None:
        leaves = [mu.clone().requires_grad_()] + ([] if logvar is None else [logvar.clone().requires_grad_()])
        loss, _ = loss_fn(leaves[0], leaves[1] if logvar is not None else None, pids)
        loss.backward()

    return run


def bench_shape(label: str, ids: int, per_id: int, dim: int, repeats: int) -> None:
    mu, pids = bnneck_batch(ids, per_id, dim, seed=0)
    learned = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1)) * 0.5
    for covariance, logvar in (("learned sigma", learned), ("identity (C)", None)):
        timed = time_interleaved(
            {
                "js": step(losses.js_triplet_loss, mu, logvar, pids),
                "euclidean": step(lambda m, lv, p: losses.batch_hard_triplet_loss(m, p, 0.3), mu, logvar, pids),
            },
            repeats,
        )
        js, euclid = timed["js"], timed["euclidean"]
        print(
            f"{label} {ids}x{per_id}x{dim}, {covariance}: forward+backward min (median) ms: "
            f"JS triplet {js[0] * 1e3:.2f} ({js[1] * 1e3:.2f}), Euclidean {euclid[0] * 1e3:.2f} "
            f"({euclid[1] * 1e3:.2f}); JS / Euclidean {js[0] / euclid[0]:.1f}x"
        )
        if logvar is not None:
            pairs = torch.randperm(len(pids), generator=torch.Generator().manual_seed(2))
            parts = time_interleaved(
                {
                    "stand-in mining": lambda: js_table.pairwise_js_mining_scores(mu, logvar),
                    "table JS, one B x D, no grad": lambda: torch.no_grad()(js_table.gaussian_js_per_dim)(
                        mu, logvar, mu[pairs], logvar[pairs]
                    ),
                },
                repeats,
            )
            print("    parts, min ms: " + ", ".join(f"{k} {v[0] * 1e3:.2f}" for k, v in parts.items()))


def mining_agreement(logvar_std: float | None, batches: int) -> None:
    """Fraction of anchors whose stand-in-mined hardest positive / negative is the exact mean-dim JS's, and the JS
    (bits, mean over dimensions) given up where it is not: true hardest minus mined (positive), mined minus true
    (negative). Exact: the table JS of all B x B pairs."""
    agree, gaps, scale = [], [], []
    for seed in range(batches):
        mu, pids = bnneck_batch(16, 4, 2048, seed)
        logvar = (
            None
            if logvar_std is None
            else torch.randn(mu.shape, generator=torch.Generator().manual_seed(100 + seed)) * logvar_std
        )
        with torch.no_grad():
            exact = (
                torch.cat(
                    [
                        js_table.gaussian_js_per_dim(
                            mu[rows, None],
                            None if logvar is None else logvar[rows, None],
                            mu[None],
                            None if logvar is None else logvar[None],
                        ).mean(-1)
                        for rows in torch.arange(64).split(2)
                    ]
                )
                / LOG2
            )
            mined = losses.hard_mining_indices(js_table.pairwise_js_mining_scores(mu, logvar), pids)
        true = losses.hard_mining_indices(exact, pids)
        rows = torch.arange(len(pids))
        agree.append([(m == t).double().mean().item() for m, t in zip(mined, true)])
        gaps.append(
            torch.stack([exact[rows, true[0]] - exact[rows, mined[0]], exact[rows, mined[1]] - exact[rows, true[1]]])
        )
        scale.append((exact[rows, true[1]] - exact[rows, true[0]]).abs().mean().item())
    agree_t, gap_t = torch.tensor(agree), torch.cat(gaps, 1)
    missed = [g[g > 0] for g in gap_t]
    name = "identity (C)" if logvar_std is None else f"logvar N(0, {logvar_std}^2)"
    print(
        f"  {name:20s} same hardest positive {agree_t[:, 0].mean():.3f} (worst batch {agree_t[:, 0].min():.3f}), "
        f"negative {agree_t[:, 1].mean():.3f} (worst {agree_t[:, 1].min():.3f}); JS given up where they differ, "
        f"mean / max bits: positive {missed[0].mean():.1e} / {missed[0].max():.1e}, negative "
        f"{missed[1].mean():.1e} / {missed[1].max():.1e}; for scale, mean |D(a, n) - D(a, p)| "
        f"{statistics.mean(scale):.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--agreement-batches", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread, {os.cpu_count()} cores"
    )
    start = time.perf_counter()
    js_table._coefficients()
    built = time.perf_counter() - start
    start = time.perf_counter()
    js_table.gaussian_js_per_dim(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.zeros(1))
    js_table.js_isotropic_from_sq_distance(torch.ones(1))
    first = time.perf_counter() - start
    size = sum(a.nbytes for a in js_table._coefficients()) / 2**20
    print(
        f"table build at first use: {built:.2f} s (float64 integrals + splines), then {first:.3f} s to the first "
        f"float32 values; tables {size:.1f} MiB"
    )
    bench_shape("paper", 16, 4, 2048, args.repeats)
    bench_shape("demo", 8, 4, 512, args.repeats)
    print(
        "mining stand-in vs exact mean-dim JS mining, paper width 16 x 4 x 2048, "
        f"{args.agreement_batches} batches (64 anchors each):"
    )
    for logvar_std in (None, 0.5, 1.5):
        mining_agreement(logvar_std, args.agreement_batches)


if __name__ == "__main__":
    main()

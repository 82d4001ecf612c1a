"""Benchmark: evaluate() against the distance computation alone, at Market-1501 and MSMT17 scale, in one run.

Each measurement runs in a fresh subprocess that builds the same seeded synthetic problem, then times one call; its
peak memory is that process's peak resident set size (resource.getrusage ru_maxrss, which counts torch's allocations,
unlike tracemalloc), printed beside the RSS just before the call (the problem's features) and the difference.

    .venv/bin/python benchmarks/evaluation.py                 # both scales (MSMT17 takes minutes on 2 cores)
    .venv/bin/python benchmarks/evaluation.py --skip-msmt17   # Market-1501 scale only
    .venv/bin/python benchmarks/evaluation.py --rerank --rerank-dim 64   # + k-reciprocal re-ranking time and memory

CPU time (all threads) is printed beside wall time: on a shared machine it is the steadier of the two ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, replace

import torch

from havana.evaluation.distance import DistanceFunction, chunk_rows
from havana.evaluation.rank import evaluate
from havana.evaluation.reranking import RerankConfig


@dataclass(frozen=True)
class Scale:
    """A protocol-faithful synthetic problem: sizes as in the real test split."""

    name: str
    num_query: int
    num_gallery: int
    num_ids: int
    num_cams: int
    distractors: int  # gallery entries with pid 0
    junk: int  # gallery entries with pid -1
    dim: int = 2048


SCALES = {  # as havana's manifests give them: prepare drops junk, so Market's gallery is 13,120 images + 2,793 pid 0
    "market1501": Scale("market1501", 3368, 15913, 751, 6, distractors=2793, junk=0),
    "msmt17": Scale("msmt17", 11659, 82161, 3060, 15, distractors=0, junk=0),
}
NOISE = 2.5  # per-dimension noise around an identity's centre: gives BoT-like mAP on the Market-scale problem
CAMERA_SHIFT = 0.5  # per-camera offset shared by all identities (same-camera images look alike)


def _fill(
    features: torch.Tensor,
    pids: torch.Tensor,
    cams: torch.Tensor,
    centres: torch.Tensor,
    cam_offsets: torch.Tensor,
    generator: torch.Generator,
    rows: int = 4096,
) -> None:
    """features[i] = centre of pids[i] (a fresh random one for pid <= 0) + camera offset + noise, chunk by chunk."""
    for start in range(0, len(features), rows):
        block = features[start : start + rows]
        torch.randn(block.shape, generator=generator, out=block)
        block.mul_(NOISE)
        ids = pids[start : start + rows]
        known = ids > 0
        block[known] += centres[ids[known] - 1]
        block[~known] += torch.randn((int((~known).sum()), block.shape[1]), generator=generator)
        block += cam_offsets[cams[start : start + rows]]


def build_problem(scale: Scale, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded query/gallery features, pids 1..num_ids (+ 0 distractors, -1 junk) and cameras; every query id is in
    the gallery under at least one other camera."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn((scale.num_ids, scale.dim), generator=generator)
    cam_offsets = CAMERA_SHIFT * torch.randn((scale.num_cams, scale.dim), generator=generator)
    q_pids = torch.arange(scale.num_query) % scale.num_ids + 1
    q_cams = torch.randint(0, scale.num_cams, (scale.num_query,), generator=generator)
    identities = scale.num_gallery - scale.distractors - scale.junk
    g_pids = torch.cat(
        [
            torch.arange(identities) % scale.num_ids + 1,
            torch.zeros(scale.distractors, dtype=torch.int64),
            -torch.ones(scale.junk, dtype=torch.int64),
        ]
    )
    g_cams = torch.randint(0, scale.num_cams, (scale.num_gallery,), generator=generator)
    g_cams[: scale.num_ids] = (q_cams[: scale.num_ids] + 1) % scale.num_cams  # a true match for every identity
    junk = g_pids == -1
    g_pids_for_features = g_pids.clone()
    g_pids_for_features[junk] = torch.randint(1, scale.num_ids + 1, (int(junk.sum()),), generator=generator)
    qf = torch.empty((scale.num_query, scale.dim))
    gf = torch.empty((scale.num_gallery, scale.dim))
    _fill(qf, q_pids, q_cams, centres, cam_offsets, generator)
    _fill(gf, g_pids_for_features, g_cams, centres, cam_offsets, generator)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def _rss_mb() -> float:
    """The current resident set size in MiB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def _call(what: str, problem: tuple[torch.Tensor, ...]) -> dict:
    """Run the measured computation once; evaluate() returns its headline metrics."""
    qf, gf, q_pids, g_pids, q_cams, g_cams = problem
    if what in ("distance", "distance_kept"):
        gallery = gf if what == "distance" else gf[g_pids != -1]
        distance = DistanceFunction(gallery)
        rows = chunk_rows(len(gallery))
        for start in range(0, len(qf), rows):
            distance(qf[start : start + rows])
        return {}
    result = evaluate(
        qf, gf, q_pids, g_pids, q_cams, g_cams, rerank=RerankConfig() if what == "evaluate_rerank" else None
    )
    return {"mAP": result["mAP"], "mINP": result["mINP"], "R1": result["cmc"][0]}


def measure(scale_name: str, what: str, repeats: int, dim: int | None = None) -> dict:
    """Best time of `repeats` calls on a fresh problem in this process (the CPU is shared, so take the least
    disturbed run), with this process's RSS before the first call and its peak."""
    scale = SCALES[scale_name]
    problem = build_problem(replace(scale, dim=dim) if dim else scale)
    before = _rss_mb()
    times, cpu_times = [], []
    for _ in range(repeats):
        cpu_start, start = _cpu_seconds(), time.perf_counter()
        extra = _call(what, problem)
        times.append(time.perf_counter() - start)
        cpu_times.append(_cpu_seconds() - cpu_start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": min(times), "cpu_seconds": min(cpu_times), "rss_before_mb": before, "peak_rss_mb": peak, **extra}


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): less disturbed by other jobs than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _in_subprocess(scale: str, what: str, repeats: int, dim: int | None = None) -> dict:
    """Run measure() in a fresh interpreter so that ru_maxrss is this measurement's alone."""
    command = [sys.executable, __file__, "--measure", what, "--scale", scale, "--repeats", str(repeats)]
    out = subprocess.run(
        command + (["--dim", str(dim)] if dim else []), check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-msmt17", action="store_true", help="only the Market-1501-scale problem")
    parser.add_argument("--rerank", action="store_true", help="also time evaluate() with k-reciprocal re-ranking")
    parser.add_argument(
        "--rerank-dim",
        type=int,
        help="feature dimension of the re-ranking measurement (a small one "
        "checks re-ranking's memory at MSMT17 scale on a CPU, where 2048-d takes about an hour)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="calls per measurement; the fastest is reported")
    parser.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--measure", choices=["distance", "distance_kept", "evaluate", "evaluate_rerank"], help=argparse.SUPPRESS
    )
    parser.add_argument("--scale", choices=sorted(SCALES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.scale, args.measure, args.repeats, args.dim)))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; best of {args.repeats} calls; "
        "peak = ru_maxrss of a fresh process per measurement"
    )
    scales = ["market1501"] if args.skip_msmt17 else ["market1501", "msmt17"]
    for name in scales:
        s = SCALES[name]
        print(
            f"\n{name} scale: {s.num_query} x {s.num_gallery}, {s.dim}-d, {s.num_ids} ids, {s.num_cams} cameras, "
            f"{s.distractors} distractors, {s.junk} junk"
        )
        dist = _in_subprocess(name, "distance", args.repeats)
        print(f"  {'distance only (chunked matmul, full gallery)':<46}: {_line(dist)}")
        kept = None
        if s.junk:
            kept = _in_subprocess(name, "distance_kept", args.repeats)
            print(f"  {'distance only (gallery without junk)':<46}: {_line(kept)}")
        for mode in ["evaluate", "evaluate_rerank"] if args.rerank else ["evaluate"]:
            dim = args.rerank_dim if mode == "evaluate_rerank" else None
            result = _in_subprocess(name, mode, args.repeats, dim)
            label = f"{mode}(){f' on {dim}-d features' if dim else ''}"
            print(f"  {label:<46}: {_line(result)}")
            print(
                f"  {'':<46}  features {result['rss_before_mb']:.0f} MiB RSS before the call, "
                f"+{result['peak_rss_mb'] - result['rss_before_mb']:.0f} MiB during it"
            )
            for label, floor in (("distance-only", dist), ("distance-only without junk", kept)):
                if floor is not None and mode == "evaluate":
                    print(
                        f"  {'':<46}  ratio to {label}: wall {result['seconds'] / floor['seconds']:.2f}x, "
                        f"CPU {result['cpu_seconds'] / floor['cpu_seconds']:.2f}x"
                    )
            print(f"  {'':<46}  mAP {result['mAP']:.4f}  mINP {result['mINP']:.4f}  R1 {result['R1']:.4f}")


def _line(result: dict) -> str:
    """Wall time, CPU time and peak memory of one measurement."""
    return (
        f"wall {result['seconds']:8.2f} s   CPU {result['cpu_seconds']:8.2f} s   peak {result['peak_rss_mb']:6.0f} MiB"
    )


if __name__ == "__main__":
    main()

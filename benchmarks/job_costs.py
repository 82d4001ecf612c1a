"""Benchmark: the CPU costs `havana plan` turns into job-seconds (havana/dag/costs.py, device kind `cpu`), measured on
this machine with one thread per job, as Snakemake runs the demo's jobs (issue 22: the plan was 6.7x low on the demo).

What it runs, in a temporary folder, through the real CLI in fresh processes (what a Snakemake job pays):
1. job start-up: `python -c` with the imports and the MLflow store a tracked job opens (torch, h5py, mlflow, a run);
   a table job's and a figure job's imports;
2. train-extractor (the demo's ResNet-18 on its synthetic dataset, 64x32) for 1 and 4 epochs, and extract: FLOP/s
   with the loader's per-image work included;
3. train-head (row vnae_jst, two seeds, the demo's features) for 1 and 21 epochs: the job's fixed cost;
4. evaluate: the baseline's job (raw features) and what each head's output adds (one head vs two);
5. in this process, stacked head steps (havana.engine.train_head) of three rows at the demo's and the paper's shapes,
   timed, with their ATen calls, bytes and FLOPs counted (havana.engine.step_counts): the seconds per call (8-d heads)
   and the matmul FLOP/s (torch.bmm) measured, the bytes/s fitted to the six times; the diagnostics in steps;
6. the JS table's build (once per process).
Everything here runs alone; how much slower the same work runs in the demo, where Snakemake keeps both cores busy, is
costs.py's busy_* (from a demo run's benchmark files and logs against these figures: two processes started side by
side here overlap too little to measure it).
It prints each figure and a line to copy into costs.py. About 8 minutes on the 2-core VM.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/job_costs.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from havana.config import load_yaml
from havana.dag.plan import batches_per_epoch, extractor_forward_flops, head_step_flops
from havana.engine.step_counts import RandomStep, step_counts
from havana.models import js_table
from havana.models.extractor import build_extractor
from havana.models.extractor_config import extractor_config
from havana.models.head import HeadTrainConfig, RowConfig, build_head, loss_diagnostics

REPO = Path(__file__).resolve().parents[1]
HAVANA = [sys.executable, "-m", "havana"]
ROWS = {
    "havana": RowConfig(constraint=True, reconz=True, klv=True, beta=1.0),
    "vnae_jst": RowConfig(beta=1.0),
    "vnae": RowConfig(triplet=True, jst=False, beta=1.0),
}
SHAPES = {"demo": (512, 40, 8, 2), "paper": (2048, 751, 16, 3)}  # width, identities, P (K = 4), stacked heads
TRACKED_START = """
import h5py, mlflow, torch
from mlflow.tracking import MlflowClient
client = MlflowClient("sqlite:///{db}")
experiment = client.get_experiment_by_name("x") or client.get_experiment(client.create_experiment("x"))
run = client.create_run(experiment.experiment_id)
client.log_batch(run.info.run_id, params=[mlflow.entities.Param("a", "1")])
client.set_terminated(run.info.run_id)
"""


def timed(command: list[str], cwd: Path, repeats: int = 1) -> float:
    """Median wall seconds of `command` in a fresh process (its output discarded; a failure stops the benchmark)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return statistics.median(times)


def start_up(work: Path) -> dict[str, float]:
    """Seconds of a fresh process with each kind of job's imports (for tracked jobs, and an MLflow run in an existing
    store: the workflow's store is created once, by its first job)."""
    tracked = [sys.executable, "-c", TRACKED_START.format(db=work / "start.db")]
    timed(tracked, work)  # creates the store
    return {
        "tracked": timed(tracked, work, 3),
        "torch": timed([sys.executable, "-c", "import h5py, torch, torchvision"], work, 3),
        "table": timed(
            [sys.executable, "-c", "from havana.commands import table; from havana.report import html"], work, 3
        ),
        "figure": timed(
            [sys.executable, "-c", "import torch, matplotlib.pyplot; from havana.report import figures"], work, 3
        ),
    }


def demo_dataset(work: Path) -> tuple[Path, dict]:
    """The demo's synthetic dataset rendered and prepared under `work`; (manifest, demo config)."""
    config = load_yaml(REPO / "config" / "demo.yaml")
    synth = config["datasets"]["synthetic"]["synth"]
    options = [f"--{key.replace('_', '-')}={value}" for key, value in synth.items()]
    subprocess.run([*HAVANA, "synth", "--out", str(work / "archive"), *options], check=True, capture_output=True)
    subprocess.run(
        [*HAVANA, "prepare", "synthetic", "--root", str(work), "--archive", str(work / "archive")],
        check=True,
        capture_output=True,
    )
    return work / "synthetic" / "manifest.csv", config


def extractor_costs(work: Path, manifest: Path, config: dict, start: float) -> dict[str, float]:
    """The demo extractor's (ResNet-18, 64x32, loader as configured) training and extraction as FLOP/s with the
    loader's per-image work included: training from 1 and 4 epochs (the difference: 3 epochs of seen images), the
    extract job less `start` (an untracked torch job's start-up)."""
    import pandas as pd

    rows = pd.read_csv(manifest)
    train_rows = rows[rows["split"] == "train"]
    ids, images = train_rows["pid"].nunique(), len(train_rows)
    path = work / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = extractor_config(config, "bot_r18")
    with torch.device("meta"):
        forward = extractor_forward_flops(build_extractor(settings, ids).eval(), settings.image_size)
    seconds = {}
    for epochs in (1, 4):
        command = [*HAVANA, "train-extractor", "--manifest", str(manifest), "--config", str(path)]
        command += ["--extractor", "bot_r18", "--out", str(work / f"model_{epochs}"), "--epochs", str(epochs)]
        seconds[epochs] = timed([*command, "--device", "cpu", "--tracking-uri", f"sqlite:///{work / 'x.db'}"], work, 2)
    train = settings.train
    seen = batches_per_epoch(images, ids, train.p, train.k) * train.p * train.k
    features = work / "features.h5"
    command = [*HAVANA, "extract", "--manifest", str(manifest), "--model", str(work / "model_1" / "model.pt")]
    command += ["--config", str(path), "--extractor", "bot_r18", "--dataset", "synthetic", "--device", "cpu"]
    extract = timed([*command, "--out", str(features)], work)
    forwarded = images * settings.extraction.views + len(rows[rows["split"] != "train"]) * 2  # query, gallery: 2 views
    per_epoch = (seconds[4] - seconds[1]) / 3
    return {
        "extractor_job": seconds[1] - per_epoch,
        "extractor_train": 3 * forward * seen / per_epoch,
        "extractor_forward": forward * forwarded / (extract - start),
        "train_extractor_1_epoch": seconds[1],
        "demo_features": features,
    }


def evaluate_costs(work: Path, features: Path, heads: list[Path], store: Path) -> dict[str, float]:
    """Evaluate jobs (medians of 3 runs): the baseline's (raw features, one output) and, from a job scoring one head
    and one scoring two (`heads`, trained with their runs in `store`), the seconds each head's output adds (the head
    read, hashed and run over query and gallery, its metrics logged into its own run)."""
    base = [*HAVANA, "evaluate", "--features", str(features), "--tracking-uri", f"sqlite:///{store}"]
    raw = timed([*base, "--out", str(work / "raw" / "seed0.json"), "--seeds", "0"], work, 3)
    one = timed([*base, "--head", str(heads[0]), "--out", str(work / "h1" / "seed0.json"), "--seeds", "0"], work, 3)
    outs = [str(work / "h2" / f"seed{seed}.json") for seed in (0, 1)]
    two = timed([*base, "--head", *map(str, heads), "--out", *outs, "--seeds", "0", "1"], work, 3)
    return {"evaluate_job": raw, "evaluate_head": two - one}


def head_job_costs(work: Path, features: Path) -> dict[str, float]:
    """A train-head job (vnae_jst, seeds 0 and 1, the demo's features) for 1 and for 21 epochs (medians of 2): its
    seconds per epoch and its fixed seconds (the 1-epoch job less one epoch; the first step's warm-up stays in it)."""
    seconds = {}
    for epochs in (1, 21):
        outs = [str(work / f"head{epochs}" / f"seed{seed}") for seed in (0, 1)]
        command = [*HAVANA, "train-head", "--features", str(features), "--row", "vnae_jst", "--dataset", "synthetic"]
        command += ["--config", str(REPO / "config" / "demo.yaml"), "--out", *outs, "--seeds", "0", "1"]
        command += ["--epochs", str(epochs), "--device", "cpu", "--tracking-uri", f"sqlite:///{work / 'head.db'}"]
        seconds[epochs] = timed(command, work, 2)
    per_epoch = (seconds[21] - seconds[1]) / 20
    return {"head_job": seconds[1] - per_epoch, "head_epoch": per_epoch}


def step_seconds(row: RowConfig, dim: int, ids: int, p: int, heads: int, repeats: int) -> tuple[float, float]:
    """(seconds of one stacked step, seconds of one head's loss_diagnostics) on random features."""
    step = RandomStep.build(row, HeadTrainConfig(p=p, k=4), dim, ids, heads)
    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    stepped = (time.perf_counter() - started) / repeats
    head, features, labels = step.stack.head(0), step.features[0], step.labels[0]
    loss_diagnostics(head, features, labels, row)
    started = time.perf_counter()
    for _ in range(repeats):
        loss_diagnostics(head, features, labels, row)
    return stepped, (time.perf_counter() - started) / repeats


def matmul_rate() -> float:
    """FLOP/s of the stacked heads' matmuls on this thread: torch.bmm of [N, B, D] x [N, D, D] at the demo's and the
    paper's shapes (the larger, as the step's Linears run at their own shape's speed; median of 10)."""
    rates = []
    for dim, _ids, p, heads in SHAPES.values():
        a, b = torch.randn(heads, 4 * p, dim), torch.randn(heads, dim, dim)
        torch.bmm(a, b)
        times = []
        for _ in range(10):
            started = time.perf_counter()
            torch.bmm(a, b)
            times.append(time.perf_counter() - started)
        rates.append(2 * heads * 4 * p * dim * dim / statistics.median(times))
    return max(rates)


def head_step_fit() -> dict[str, float]:
    """The matmul FLOP/s measured (matmul_rate), the seconds per call measured on 8-d heads (where FLOPs and bytes are
    nothing), then the bytes/s that fits the six timed steps best on what the calls and FLOPs leave; each step's
    measured and fitted time printed; the diagnostics of every head of the job (one loss_diagnostics each, per epoch)
    in stacked steps (their median ratio)."""
    rate = matmul_rate()
    tiny = [
        step_seconds(row, 8, 40, 8, 2, 20)[0] / step_counts(row, HeadTrainConfig(p=8, k=4), 8, 40, 2).calls
        for row in ROWS.values()
    ]
    per_call = float(np.median(tiny))
    equations, times, ratios = [], [], []
    for shape, (dim, ids, p, heads) in SHAPES.items():
        train = HeadTrainConfig(p=p, k=4)
        for name, row in ROWS.items():
            counts = step_counts(row, train, dim, ids, heads)
            with torch.device("meta"):
                flops = heads * head_step_flops(build_head(dim, ids, row, train), p * 4)
            seconds, diagnostics = step_seconds(row, dim, ids, p, heads, 20 if shape == "demo" else 4)
            ratios.append(heads * diagnostics / seconds)
            equations.append((counts.calls, flops, counts.bytes))
            times.append(seconds)
            print(
                f"  step {shape:5s} {name:8s} {seconds * 1e3:8.1f} ms: {counts.calls} calls, {flops / 1e9:.2f} GFLOP, "
                f"{counts.bytes / 1e9:.2f} GB; every head's diagnostics {heads * diagnostics / seconds:.2f} steps"
            )
    left = np.array([seconds - flops / rate - calls * per_call for (calls, flops, _), seconds in zip(equations, times)])
    moved = np.array([moved for _, _, moved in equations], dtype=float)
    per_byte = max(float(moved @ left / (moved @ moved)), 1e-30)
    for (calls, flops, byte_count), seconds in zip(equations, times):
        fitted = calls * per_call + flops / rate + byte_count * per_byte
        print(f"    measured {seconds * 1e3:8.1f} ms, fitted {fitted * 1e3:8.1f} ms ({seconds / fitted:.2f}x)")
    return {
        "head_call": per_call,
        "head_matmul": rate,
        "head_memory": 1 / per_byte,
        "head_diagnostics": float(np.median(ratios)),
    }


def main() -> None:
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # every job below runs as Snakemake runs a 1-thread job
    print(f"job costs on this machine, one thread per job (torch {torch.__version__}, {os.cpu_count()} CPUs)")
    started = time.perf_counter()
    js_table._coefficients.cache_clear()
    js_table._coefficients()
    print(f"  JS table build: {time.perf_counter() - started:.2f} s (once per process, in head_job)")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        starts = start_up(work)
        print("  start-up: " + ", ".join(f"{kind} {seconds:.2f} s" for kind, seconds in starts.items()))
        manifest, config = demo_dataset(work)
        extractor = extractor_costs(work, manifest, config, starts["torch"])
        print(
            f"  extractor (64x32, loader included): training {extractor['extractor_train'] / 1e9:.1f} GFLOP/s, a job "
            f"{extractor['extractor_job']:.1f} s besides its epochs; extraction "
            f"{extractor['extractor_forward'] / 1e9:.1f} GFLOP/s"
        )
        head = head_job_costs(work, extractor["demo_features"])
        print(
            f"  train-head job (vnae_jst, 2 seeds, demo): {head['head_job']:.2f} s + {head['head_epoch']:.2f} s/epoch"
        )
        heads = [work / "head1" / f"seed{seed}" / "head.pt" for seed in (0, 1)]
        evaluated = evaluate_costs(work, extractor["demo_features"], heads, work / "head.db")
        print(f"  evaluate job: {evaluated['evaluate_job']:.2f} s + {evaluated['evaluate_head']:.2f} s per head")
    print("  stacked head steps, 1 thread:")
    fit = head_step_fit()
    print(
        f"  {fit['head_call'] * 1e6:.1f} us per call and matmuls at {fit['head_matmul'] / 1e9:.1f} GFLOP/s (measured), "
        f"{fit['head_memory'] / 1e9:.1f} GB/s; diagnostics {fit['head_diagnostics']:.2f} stacked steps per epoch"
    )
    figures = {
        "tracked_job": starts["tracked"],
        "torch_job": starts["torch"],
        "table_job": starts["table"],
        "figure_job": starts["figure"],
        "extractor_job": extractor["extractor_job"],
        "extractor_train": extractor["extractor_train"],
        "extractor_forward": extractor["extractor_forward"],
        "head_job": head["head_job"],
        **fit,
        **evaluated,
    }
    print("costs.py, CPU: " + ", ".join(f"{name} {value:.4g}" for name, value in figures.items()))


if __name__ == "__main__":
    main()

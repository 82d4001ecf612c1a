"""Benchmark: the CPU costs `havana plan` turns into job-seconds (havana/dag/costs.py, device kind `cpu`), measured on
this machine with one thread per job, as Snakemake runs the demo's jobs (issue 22: the plan was 6.7x low on the demo).

What it runs, in a temporary folder, through the real CLI in fresh processes (what a Snakemake job pays):
1. job start-up: `python -c` with the imports and the MLflow store a tracked job opens (torch, h5py, mlflow, a run);
   a table job's and a figure job's imports;
2. train-extractor (ResNet-18 on the demo's synthetic dataset) for 1 and 3 epochs at 64x32 and at 128x64 images:
   per seen image a fixed loader cost plus FLOPs at a rate, solved from the two sizes; the same for `extract`;
3. evaluate on raw features with 1 and with 3 outputs: the job's fixed cost and the cost per output;
4. train-head (row vnae_jst, two seeds, the demo's features) for 1 and 3 epochs: the job's fixed cost;
5. in this process, stacked head steps (havana.engine.train_head) of three rows at the demo's and the paper's shapes,
   timed, with their ATen calls, bytes and FLOPs counted (havana.engine.step_counts): the seconds per call, the matmul
   FLOP/s and the bytes/s that fit the six times best (least squares); and the per-epoch diagnostics in steps;
6. the JS table's build (once per process).
It prints each figure and a block to paste into costs.py. About 3 minutes on the 2-core VM.

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
from havana.engine.step_counts import step_counts
from havana.engine.train_head import StackedHeads, StackedOptimizer
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
        subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def start_up(work: Path) -> dict[str, float]:
    """Seconds of a fresh process with each kind of job's imports (and for tracked jobs, an MLflow run)."""
    return {
        "tracked": timed([sys.executable, "-c", TRACKED_START.format(db=work / "start.db")], work, 3),
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
    """Per image seen in training / forwarded in extraction: a fixed cost and a FLOP rate, from two image sizes
    (`start`: a tracked job's start-up, taken off the extract job's time)."""
    import pandas as pd

    rows = pd.read_csv(manifest)
    train_rows = rows[rows["split"] == "train"]
    ids, images = train_rows["pid"].nunique(), len(train_rows)
    extracted_images = len(rows[rows["split"] != "train"]) * 2  # query and gallery: plain + flipped
    found: dict[str, list[tuple[float, float]]] = {"train": [], "forward": []}
    db = f"sqlite:///{work / 'extractor.db'}"
    for size in ([64, 32], [128, 64]):
        entry = dict(config["extractors"]["bot_r18"], image_size=size)
        sized = dict(config, extractors={"bot_r18": entry})
        path = work / f"extractor_{size[0]}.yaml"
        path.write_text(yaml.safe_dump(sized))
        settings = extractor_config(sized, "bot_r18")
        with torch.device("meta"):
            forward = extractor_forward_flops(build_extractor(settings, ids).eval(), size)
        seconds = {}
        for epochs in (1, 3):
            out = work / f"model_{size[0]}_{epochs}"
            seconds[epochs] = timed(
                [
                    *HAVANA,
                    "train-extractor",
                    "--manifest",
                    str(manifest),
                    "--config",
                    str(path),
                    "--extractor",
                    "bot_r18",
                    "--out",
                    str(out),
                    "--epochs",
                    str(epochs),
                    "--device",
                    "cpu",
                    "--tracking-uri",
                    db,
                ],
                work,
            )
        train = settings.train
        seen = batches_per_epoch(images, ids, train.p, train.k) * train.p * train.k
        found["train"].append(((seconds[3] - seconds[1]) / (2 * seen), 3 * forward))
        views = settings.extraction.views
        one, two = (work / f"features_{size[0]}_{n}.h5" for n in (1, 2))
        extract = [
            *HAVANA,
            "extract",
            "--manifest",
            str(manifest),
            "--model",
            str(work / f"model_{size[0]}_1" / "model.pt"),
            "--config",
            str(path),
            "--extractor",
            "bot_r18",
            "--dataset",
            "synthetic",
            "--device",
            "cpu",
            "--tracking-uri",
            db,
        ]
        total = timed([*extract, "--out", str(one)], work)
        forwarded = images * views + extracted_images
        found["forward"].append((total - start, forward * forwarded, forwarded))
        if size == [64, 32]:
            demo_features = one
    (t_small, f_small), (t_large, f_large) = found["train"]
    train_rate = (f_large - f_small) / max(t_large - t_small, 1e-9)
    train_image = t_small - f_small / train_rate
    (e_small, g_small, n_small), (e_large, g_large, n_large) = found["forward"]
    forward_rate = (g_large / n_large - g_small / n_small) / max(e_large / n_large - e_small / n_small, 1e-12)
    return {
        "extractor_train_rate": train_rate,
        "extractor_train_image": train_image,
        "extractor_forward_rate": forward_rate,
        "extractor_forward_image": e_small / n_small - g_small / n_small / forward_rate,
        "demo_features": demo_features,
    }


def evaluate_costs(work: Path, features: Path) -> dict[str, float]:
    """A raw-feature evaluate job with 1 output and with 3 (the features scored once): fixed and per-output seconds."""
    base = [*HAVANA, "evaluate", "--features", str(features), "--tracking-uri", f"sqlite:///{work / 'eval.db'}"]
    one = timed([*base, "--out", str(work / "e1" / "seed0.json"), "--seeds", "0"], work)
    three = timed(
        [*base, "--out", *(str(work / "e3" / f"seed{s}.json") for s in range(3)), "--seeds", "0", "1", "2"], work
    )
    per_output = (three - one) / 2
    return {"evaluate_output": per_output, "evaluate_job": one - per_output}


def head_job_costs(work: Path, features: Path) -> dict[str, float]:
    """A train-head job (vnae_jst, seeds 0 and 1, the demo's features) for 1 and for 3 epochs: its fixed seconds."""
    config = REPO / "config" / "demo.yaml"
    seconds = {}
    for epochs in (1, 3):
        outs = [str(work / f"head{epochs}" / f"seed{s}") for s in (0, 1)]
        seconds[epochs] = timed(
            [
                *HAVANA,
                "train-head",
                "--features",
                str(features),
                "--row",
                "vnae_jst",
                "--config",
                str(config),
                "--dataset",
                "synthetic",
                "--out",
                *outs,
                "--seeds",
                "0",
                "1",
                "--epochs",
                str(epochs),
                "--device",
                "cpu",
                "--tracking-uri",
                f"sqlite:///{work / 'head.db'}",
            ],
            work,
        )
    per_epoch = (seconds[3] - seconds[1]) / 2
    return {"head_job": seconds[1] - per_epoch, "head_epoch_measured": per_epoch}


def step_seconds(row: RowConfig, dim: int, ids: int, p: int, heads: int, repeats: int) -> tuple[float, float]:
    """(seconds of one stacked step, seconds of one head's loss_diagnostics) on random features."""
    train = HeadTrainConfig(p=p, k=4)
    torch.manual_seed(0)
    stack = StackedHeads([build_head(dim, ids, row, train) for _ in range(heads)], row, train.label_smoothing)
    optimizer = StackedOptimizer(stack.params, train)
    batch = p * 4
    features = torch.randn(heads, batch, dim)
    labels = (torch.arange(batch) // 4).expand(heads, batch)
    noise = {name: torch.randn(heads, batch, width) for name, width in stack.noise_widths.items()}
    active = torch.ones(heads, dtype=torch.bool)

    def step() -> None:
        grads, _, _ = stack.loss_and_grads(features, labels, noise)
        optimizer.step(grads, active)

    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    stepped = (time.perf_counter() - started) / repeats
    head = stack.head(0)
    loss_diagnostics(head, features[0], labels[0], row)
    started = time.perf_counter()
    for _ in range(repeats):
        loss_diagnostics(head, features[0], labels[0], row)
    return stepped, (time.perf_counter() - started) / repeats


def head_step_fit() -> dict[str, float]:
    """Least-squares seconds per call, matmul FLOP/s and bytes/s over the three rows at both shapes, with each
    shape's measured and fitted step times printed; the diagnostics in steps of one head (their median ratio)."""
    equations, times, ratios = [], [], []
    for shape, (dim, ids, p, heads) in SHAPES.items():
        train = HeadTrainConfig(p=p, k=4)
        for name, row in ROWS.items():
            counts = step_counts(row, train, dim, ids, heads)
            with torch.device("meta"):
                flops = heads * head_step_flops(build_head(dim, ids, row, train), p * 4)
            seconds, diagnostics = step_seconds(row, dim, ids, p, heads, 20 if shape == "demo" else 4)
            one_head, _ = step_seconds(row, dim, ids, p, 1, 20 if shape == "demo" else 4)
            ratios.append(diagnostics / one_head)
            equations.append([counts.calls, flops, counts.bytes])
            times.append(seconds)
            print(
                f"  step {shape:5s} {name:8s} {seconds * 1e3:8.1f} ms: {counts.calls} calls, {flops / 1e9:.2f} GFLOP, "
                f"{counts.bytes / 1e9:.2f} GB; diagnostics {diagnostics / one_head:.2f} one-head steps"
            )
    a, b = np.array(equations, dtype=float), np.array(times)
    scale = a.max(axis=0)
    solution = np.linalg.lstsq(a / scale, b, rcond=None)[0] / scale
    per_call, per_flop, per_byte = (max(value, 1e-30) for value in solution)
    for (calls, flops, moved), seconds in zip(equations, times):
        fitted = calls * per_call + flops * per_flop + moved * per_byte
        print(f"    measured {seconds * 1e3:8.1f} ms, fitted {fitted * 1e3:8.1f} ms ({seconds / fitted:.2f}x)")
    return {
        "head_call": per_call,
        "head_matmul": 1 / per_flop,
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
    table_seconds = time.perf_counter() - started
    print(f"  JS table build: {table_seconds:.2f} s")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        starts = start_up(work)
        print("  start-up: " + ", ".join(f"{kind} {seconds:.2f} s" for kind, seconds in starts.items()))
        manifest, config = demo_dataset(work)
        extractor = extractor_costs(work, manifest, config, starts["tracked"])
        for kind in ("train", "forward"):
            print(
                f"  extractor {kind}: {extractor[f'extractor_{kind}_image'] * 1e3:.2f} ms per image + FLOPs at "
                f"{extractor[f'extractor_{kind}_rate'] / 1e9:.1f} GFLOP/s"
            )
        evaluated = evaluate_costs(work, extractor["demo_features"])
        print(
            f"  evaluate job: {evaluated['evaluate_job']:.2f} s fixed + {evaluated['evaluate_output']:.2f} s per output"
        )
        head = head_job_costs(work, extractor["demo_features"])
        print(
            f"  train-head job (vnae_jst, 2 seeds, demo): {head['head_job']:.2f} s fixed, "
            f"{head['head_epoch_measured']:.2f} s per epoch"
        )
    print("  stacked head steps, 1 thread:")
    fit = head_step_fit()
    print(
        f"  fit: {fit['head_call'] * 1e6:.1f} us per call, {fit['head_matmul'] / 1e9:.1f} GFLOP/s, "
        f"{fit['head_memory'] / 1e9:.1f} GB/s; diagnostics {fit['head_diagnostics']:.2f} one-head steps per epoch"
    )


if __name__ == "__main__":
    main()

"""Per-device costs that `havana plan` turns into job-seconds and hours: data, each with where it comes from.

A cost is either MEASURED by a script in benchmarks/ (the figure it printed, on the device named) or EXTRAPOLATED (an
estimate with its reasoning). `havana plan` prints which is which beside every figure. Work is counted from the code
itself: FLOPs with torch.utils.flop_counter on the real modules (meta device), a head step's ATen calls and bytes on
the engine's own step (havana.engine.step_counts), so a rate carries over between architectures, widths and sizes.

What a job costs (havana.dag.plan):
- every job: a fixed cost (interpreter, imports, the MLflow store and run, writing its outputs): `*_job`;
- train_extractor / extract_features: each image's FLOPs at a rate that includes the loader's work per image (on the
  CPU measured at the demo's 64x32, where the loader is about a fifth of the time);
- train_head: per stacked step its calls x `head_call` plus its FLOPs and bytes at `head_matmul` and `head_memory`
  (on a GPU the longer of the host's launches and the device's work, which overlap); per epoch the diagnostics of
  every head (one loss_diagnostics each), `head_diagnostics` stacked steps;
- evaluate: per head scored its read, encoding and run (`evaluate_head`), plus the scoring FLOPs at `evaluate`;
- on a machine that runs several jobs at once (Snakemake keeps every core busy), extractor training and head steps
  run `busy_*` times slower than alone (extraction, mostly reading and decoding, was not measurably slower).

Units: "FLOP/s", "B/s" (work / rate = seconds), "s/job", "s/call", "s/output" (count x value = seconds),
"steps" (a multiple of the job's stacked step), "x" (a factor). To add a device kind: run benchmarks/job_costs.py
on it and add its figures here, measured.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """How fast one kind of work runs, or what it costs, on one device kind."""

    value: float
    unit: str  # FLOP/s, B/s, s/job, s/call, s/image, s/output or steps (module docstring)
    measured: bool  # True: printed by a benchmark script on this device kind; False: extrapolated
    source: str  # the benchmark and its printed figure, or the reasoning of the extrapolation


CPU = "cpu"
H100 = "h100"
_JOB_COSTS = (
    "benchmarks/job_costs.py (2-core AMD EPYC VM, torch 2.14.1 CPU build, 1 thread per job, nothing else running)"
)

RATES: dict[str, dict[str, Rate]] = {
    # The 2-core CPU development machine, one thread per job as Snakemake runs the demo (extractor_threads: 1).
    CPU: {
        "tracked_job": Rate(
            4.64,
            "s/job",
            True,
            f"{_JOB_COSTS}: a fresh process importing torch, h5py and mlflow and "
            "writing one run to an existing sqlite store",
        ),
        "torch_job": Rate(3.36, "s/job", True, f"{_JOB_COSTS}: a fresh process importing torch, torchvision, h5py"),
        "table_job": Rate(0.21, "s/job", True, f"{_JOB_COSTS}: a fresh process importing the table command"),
        "figure_job": Rate(
            2.33, "s/job", True, f"{_JOB_COSTS}: a fresh process importing torch, matplotlib and the figures"
        ),
        "extractor_job": Rate(
            6.7,
            "s/job",
            True,
            f"{_JOB_COSTS}: a 1-epoch train-extractor job (10.5 s) less its "
            "epoch: start-up, model, MLflow run, model.pt",
        ),
        "extractor_train": Rate(
            5.65e10,
            "FLOP/s",
            True,
            f"{_JOB_COSTS}: train-extractor, the demo's ResNet-18 at 64x32, 4 epochs less 1 (loader included)",
        ),
        "extractor_forward": Rate(
            6.33e10,
            "FLOP/s",
            True,
            f"{_JOB_COSTS}: extract, the demo's ResNet-18 at 64x32, less a torch job's start-up (loader included)",
        ),
        "head_job": Rate(
            8.23,
            "s/job",
            True,
            f"{_JOB_COSTS}: a 1-epoch train-head job (row vnae_jst, 2 seeds) less its "
            "epoch (0.28 s, from 21 epochs): start-up, the JS table (1.2 s), the first step, runs, files",
        ),
        "head_call": Rate(1.74e-5, "s/call", True, f"{_JOB_COSTS}: stacked steps of 8-d heads, seconds / calls"),
        "head_matmul": Rate(7.0e10, "FLOP/s", True, f"{_JOB_COSTS}: torch.bmm at the stacked heads' shapes"),
        "head_memory": Rate(
            2.46e10,
            "B/s",
            True,
            f"{_JOB_COSTS}: fitted to 6 timed stacked steps (3 rows, the demo's "
            "and the paper's shapes) after calls and matmuls; each step within 0.95-1.08x of the model",
        ),
        "head_diagnostics": Rate(0.48, "steps", True, f"{_JOB_COSTS}: heads x loss_diagnostics / stacked step"),
        "evaluate_job": Rate(4.77, "s/job", True, f"{_JOB_COSTS}: evaluate, raw features (the baseline's job)"),
        "evaluate_head": Rate(0.21, "s/output", True, f"{_JOB_COSTS}: evaluate of two heads less evaluate of one"),
        "busy_extractor": Rate(
            1.2,
            "x",
            True,
            "the demo (quiet VM, make demo at e0fccaa): its three train_extractor jobs took 128.6 s against 107.6 s by "
            "the figures above, measured alone",
        ),
        "busy_head": Rate(
            1.23,
            "x",
            True,
            "the demo (same run): vnae_jst's epochs took 0.345 s (its log) against 0.28 s alone (job_costs.py's "
            "21-epoch job)",
        ),
        "evaluate": Rate(
            1.60e11,
            "FLOP/s",
            True,
            "benchmarks/evaluation.py: evaluate() at Market-1501 scale, "
            "3,368 x 15,913 x 2048-d (2.2e11 FLOP) in 1.37 s (README, 2-core CPU)",
        ),
    },
    H100: {
        "tracked_job": Rate(5.0, "s/job", False, "extrapolated: the CPU's start-up and CUDA's initialisation (~2 s)"),
        "torch_job": Rate(4.0, "s/job", False, "extrapolated: the CPU's start-up and CUDA's initialisation (~2 s)"),
        "table_job": Rate(0.5, "s/job", False, "extrapolated: the CPU's (tables never use the GPU)"),
        "figure_job": Rate(2.5, "s/job", False, "extrapolated: the CPU's (figures never use the GPU)"),
        "extractor_train": Rate(
            4.0e13,
            "FLOP/s",
            False,
            "extrapolated: bf16 autocast + channels_last; published "
            "ResNet-50 mixed-precision training on one H100 is about 3,000-4,500 images/s at "
            "224x224 (12.3 GFLOP per image forward+backward), i.e. 37-55 TFLOP/s; the lower end "
            "is taken because the 4 loader workers decode JPEGs",
        ),
        "extractor_forward": Rate(
            4.0e13,
            "FLOP/s",
            False,
            "extrapolated: the training rate (forward-only runs faster on the GPU, but the JPEG loader then sets the "
            "pace)",
        ),
        "extractor_job": Rate(8.0, "s/job", False, "extrapolated: the CPU's and CUDA's initialisation (~2 s)"),
        "head_job": Rate(8.0, "s/job", False, "extrapolated: the CPU's train-head job and CUDA's initialisation"),
        "head_call": Rate(
            8.0e-6,
            "s/call",
            False,
            "extrapolated (issue 11): one head step's ~235 kernels took 1.2-2.8 ms of host dispatch in eager PyTorch, "
            "5-12 us each; vmap adds its own Python per call. Not measured: no GPU was lent to this work",
        ),
        "head_matmul": Rate(
            1.0e13,
            "FLOP/s",
            False,
            "extrapolated (issue 11): one step of the paper head is 14.6 GFLOP in about 1.5 ms of device work (fp32, "
            "batch 64: far below the 67 TFLOP/s peak)",
        ),
        "head_memory": Rate(
            2.0e12,
            "B/s",
            False,
            "extrapolated: 60% of the H100 SXM's 3.35 TB/s HBM3, what elementwise kernels reach; the bytes are an "
            "upper bound (every operand and result of every call)",
        ),
        "head_diagnostics": Rate(2.0, "steps", False, "extrapolated: the CPU's ratio"),
        "evaluate_job": Rate(4.0, "s/job", False, "evaluate runs on the CPU cores (its rule claims no GPU): the CPU's"),
        "evaluate_head": Rate(0.5, "s/output", False, "the CPU's"),
        "busy_extractor": Rate(1.0, "x", False, "one job per GPU"),
        "busy_head": Rate(1.0, "x", False, "one job per GPU"),
        "evaluate": Rate(
            1.60e11,
            "FLOP/s",
            True,
            "evaluate runs on the CPU (its rule claims no GPU): the 2-core "
            "CPU's measured rate, an upper bound on its time on the GPU box's 16 cores",
        ),
    },
}
# On a GPU the host launches kernels while the device runs earlier ones: a step takes the longer of the two. On the CPU
# one thread does both, one after the other.
OVERLAPPED = {CPU: False, H100: True}


def rate(device_kind: str, work: str) -> Rate:
    """The rate of `work` on `device_kind` (KeyError names are checked by the caller)."""
    return RATES[device_kind][work]

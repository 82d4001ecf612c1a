"""Per-device compute rates that `havana plan` turns into hours: data, each with where it comes from.

A rate is either MEASURED by a script in benchmarks/ (the figure it printed, on the device named) or EXTRAPOLATED
(an estimate with its reasoning). `havana plan` prints which is which beside every figure. Work is counted from the
code's own shapes (torch.utils.flop_counter on the real modules, built on the meta device), so a rate in FLOP/s
carries over between architectures, image sizes and feature widths. A train_head job steps the seeds' heads stacked
(one vmapped step for all of them): a step of N heads takes N x the head's FLOPs at `head_step`, or the host's
`head_dispatch` time where that is longer (a GPU, where the head is bound by kernel launches, not FLOPs).

To add a device kind: run benchmarks/extraction.py and benchmarks/head.py on it and add its rates here, measured.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """How fast one kind of work runs on one device kind."""

    value: float
    unit: str  # "FLOP/s" (work / rate = seconds) or "s/step" (a fixed time per head training step)
    measured: bool  # True: printed by a benchmark script on this device kind; False: extrapolated
    source: str  # the benchmark and its printed figure, or the reasoning of the extrapolation


# The 2-core CPU development machine (torch 2.14 CPU build). Conv work per image: ResNet-18 at 128x64, last stride 1,
# is 1.00 GFLOP forward (flop counter), so images/s x 1.00e9 (x3 for forward + backward) gives FLOP/s.
CPU = "cpu"
H100 = "h100"

RATES: dict[str, dict[str, Rate]] = {
    CPU: {
        "extractor_train": Rate(
            2.67e11,
            "FLOP/s",
            True,
            "benchmarks/extraction.py: ResNet-18 128x64 training 89 images/s x 3.0 GFLOP (README, 2-core CPU)",
        ),
        "extractor_forward": Rate(
            2.78e11,
            "FLOP/s",
            True,
            "benchmarks/extraction.py: extraction end to end 278 images/s x 1.0 GFLOP (README, 2-core CPU)",
        ),
        "head_step": Rate(
            7.4e10,
            "FLOP/s",
            True,
            "benchmarks/head.py: one paper head's Linear layers run at 117 "
            "GFLOP/s (516 samples/s, README, 2-core CPU), and 3 heads stacked run at 0.63x the heads x "
            "samples/s of 3 heads one at a time on this CPU (2048-d, measured in one run), so 74 GFLOP/s",
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
            "extrapolated: the training rate (forward-only runs "
            "faster on the GPU, but the JPEG loader then sets the pace)",
        ),
        "head_step": Rate(
            9.7e12,
            "FLOP/s",
            False,
            "extrapolated (issue 11): one step of the paper head is 14.6 GFLOP in about 1.5 ms of device work (fp32)",
        ),
        "head_dispatch": Rate(
            2.8e-3,
            "s/step",
            False,
            "extrapolated (issue 11): one step launches about 235 "
            "kernels, 1.2-2.8 ms of host dispatch, the same for N stacked heads (one vmapped step "
            "launches each kernel once, N times larger); so one head alone is launch-bound at "
            "2.8 ms per step and 3 stacked seeds take 3 x 1.5 = 4.5 ms of device work, 1.9x "
            "the heads per hour; not measured: no GPU was lent to this work",
        ),
        "evaluate": Rate(
            1.60e11,
            "FLOP/s",
            True,
            "evaluate runs on the CPU (its rule claims no GPU): the 2-core "
            "CPU's measured rate, an upper bound on its time on the GPU box's 16 cores",
        ),
    },
}


def rate(device_kind: str, work: str) -> Rate:
    """The rate of `work` on `device_kind` (KeyError names are checked by the caller)."""
    return RATES[device_kind][work]

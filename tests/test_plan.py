"""`havana plan`: job counts equal the Snakemake dry run's, byte estimates match files written by the real writers
(within 5%), FLOP counts match hand counts, and the CLI prints every stage and the totals. The estimate against a
whole demo run's files is checked in tests/test_demo.py (slow)."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from havana.cli import main
from havana.config import load_yaml
from havana.dag import costs, plan
from havana.data.features import FeatureSplit, write_features
from havana.data.sampler import PKSampler
from havana.engine.train_head import StackedHeads, StackedOptimizer
from havana.errors import HavanaError
from havana.models.extractor import build_extractor, save_extractor
from havana.models.extractor_config import ExtractorConfig
from havana.models.head import HeadTrainConfig, RowConfig, build_head, head_loss, save_head

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
CONFIGS = {"demo": REPO / "config" / "demo.yaml", "paper": REPO / "config" / "config.yaml"}
HAVANA_ROW = RowConfig(jst=True, reconx=True, klz=True, reconz=True, klv=True, constraint=True, beta=1.0)
SIGMA_ROW = RowConfig(jst=True, reconx=True, klz=True, klv=True, beta=1.0)  # learned z_sigma, HVD


def dry_run_counts(config: Path, workdir: Path) -> dict[str, int]:
    """{rule: jobs} of `snakemake all -n` under `config` (the 'Job stats' table), without the `all` rule itself."""
    result = subprocess.run(
        [
            str(SNAKEMAKE),
            "all",
            "-n",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    table = log[log.index("Job stats:") :]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    counts.pop("all"), counts.pop("total")
    return counts


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_job_counts_equal_the_snakemake_dry_run(name, tmp_path):
    config = load_yaml(CONFIGS[name])
    jobs = plan.planned_jobs(config)
    planned = collections.Counter(job.stage for stage in jobs.values() for job in stage)
    assert dict(planned) == dry_run_counts(CONFIGS[name], tmp_path)


def test_synthetic_sizes_are_the_render_plans():
    config = load_yaml(CONFIGS["demo"])
    sizes = plan.split_sizes(config, "synthetic")
    # 80 ids x 8 images: half the ids train; the test images get 5% distractors on top, and their 5% junk is dropped
    assert sizes["train"] == (40, 320)
    assert sizes["query"][1] + sizes["gallery"][1] == 40 * 8 + round(0.05 * 40 * 8)


def _paths(count: int, split: str) -> list[str]:
    return [f"Synthetic-ReID/bounding_box_{split}/{i:04d}_c1s1_{i:06d}_01.jpg" for i in range(count)]


@pytest.mark.parametrize(
    "sizes,views,dim",
    [
        ({"train": (40, 320), "query": (40, 64), "gallery": (41, 272)}, 2, 512),  # the demo's files
        ({"train": (100, 700), "query": (50, 300), "gallery": (60, 900)}, 1, 2048),  # paper width
    ],
)
def test_feature_file_estimate_matches_the_real_writer(tmp_path, sizes, views, dim):
    rng = np.random.default_rng(0)
    splits = {}
    for split, (_, rows) in sizes.items():
        split_views = views if split == "train" else 2
        splits[split] = FeatureSplit(
            rng.standard_normal((rows, split_views, dim), dtype=np.float32),
            np.arange(rows),
            np.zeros(rows, dtype=np.int64),
            _paths(rows, split),
        )
    path = tmp_path / "features.h5"
    write_features(path, splits, {"dataset": "synthetic", "extractor": "bot_r18", "views": views})
    assert plan.features_bytes(sizes, views, dim) == pytest.approx(path.stat().st_size, rel=0.05)


@pytest.mark.parametrize("dim,ids,row,heads", [(512, 40, HAVANA_ROW, 1), (1024, 751, SIGMA_ROW, 3)])
def test_head_and_checkpoint_estimates_match_the_real_files(tmp_path, dim, ids, row, heads):
    """head.pt per head; the job's checkpoint (the engine's stacked weights and Adam state of its `heads` seeds) is
    `heads` x adam_checkpoint_bytes."""
    torch.manual_seed(0)
    train = HeadTrainConfig()
    stack = StackedHeads([build_head(dim, ids, row, train) for _ in range(heads)], row, train.label_smoothing)
    save_head(tmp_path / "head.pt", stack.head(0))
    optimizer = StackedOptimizer(stack.params, train)
    torch.save(
        {
            "params": stack.params,
            "optimizer": optimizer.state_dict(),
            "epoch": 1,
            "within": None,
            "histories": [[] for _ in range(heads)],
            "fingerprint": "0" * 64,
        },
        tmp_path / "checkpoint.pt",
    )
    with torch.device("meta"):
        shaped = build_head(dim, ids, row, train)
    assert plan.state_bytes(shaped) == pytest.approx((tmp_path / "head.pt").stat().st_size, rel=0.05)
    assert heads * plan.adam_checkpoint_bytes(shaped) == pytest.approx(
        (tmp_path / "checkpoint.pt").stat().st_size, rel=0.05
    )


def counted_step_flops(dim: int, ids: int, row: RowConfig, train: HeadTrainConfig) -> int:
    """What torch's flop counter sees in one real training step of the head (the row's loss forward and backward on
    a P x K batch), run on the meta device (shapes only, no arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = train.p * train.k
    with torch.device("meta"):
        head = build_head(dim, ids, row, train)
        x = torch.empty(batch, dim)
    labels = torch.arange(batch, device="meta") // train.k
    with FlopCounterMode(display=False) as counter:
        total, _ = head_loss(head, x, labels, row, train.label_smoothing)
        total.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("dim,ids,row", [(2048, 751, HAVANA_ROW), (512, 40, HAVANA_ROW), (1024, 751, SIGMA_ROW)])
def test_head_step_flops_are_the_flop_counters_on_a_real_step(dim, ids, row):
    """The plan's count (6 FLOPs per weight per sample, every Linear) against the flop counter on a training step: the
    count is within 5% (it also counts the input gradient of the layers the features feed, which a step does not
    compute: 3.5% at paper width)."""
    train = HeadTrainConfig()
    with torch.device("meta"):
        head = build_head(dim, ids, row, train)
    counted = counted_step_flops(dim, ids, row, train)
    assert plan.head_step_flops(head, train.p * train.k) == pytest.approx(counted, rel=0.05)


def test_step_counts_at_a_wide_head_equal_a_real_count_at_that_width():
    """The plan's calls and bytes of a stacked step (probes at widths 8, 16, 32 and their quadratic) equal a count on
    a real step at 256-d: the calls exactly, the bytes to 1e-6 (the quadratic is exact, not a fit)."""
    from havana.engine.step_counts import count_step, step_counts

    train = HeadTrainConfig(p=4, k=4)
    for row in (HAVANA_ROW, SIGMA_ROW):
        real = count_step(row, train, 256, 40, 2)
        counted = step_counts(row, train, 256, 40, 2)
        assert counted.calls == sum(real.calls.values())
        assert counted.bytes == pytest.approx(real.bytes, rel=1e-6)


def test_a_step_costs_calls_then_work_on_a_cpu_and_the_longer_of_them_on_a_gpu():
    """Hand-computed step times from the cost table: on the CPU (one thread does both) calls x s/call + FLOPs / rate +
    bytes / rate, times the slow-down of a machine whose other cores run jobs too; on the H100 (launches overlap the
    device's work, one job per GPU) the longer of the launches and the work."""
    from havana.engine.step_counts import StepCounts

    counts, flops = StepCounts(calls=300, bytes=4.0e9), 3.0e10
    cpu, gpu = costs.RATES[costs.CPU], costs.RATES[costs.H100]
    alone = 300 * cpu["head_call"].value + 3.0e10 / cpu["head_matmul"].value + 4.0e9 / cpu["head_memory"].value
    expected_cpu = alone * cpu["busy_head"].value
    assert plan.head_step_seconds(costs.CPU, counts, flops) == pytest.approx(expected_cpu)
    launches = 300 * gpu["head_call"].value
    work = 3.0e10 / gpu["head_matmul"].value + 4.0e9 / gpu["head_memory"].value
    assert plan.head_step_seconds(costs.H100, counts, flops) == pytest.approx(max(launches, work))
    few_calls = StepCounts(calls=1, bytes=4.0e9)
    assert plan.head_step_seconds(costs.H100, few_calls, flops) == pytest.approx(work)


def test_a_head_job_is_its_fixed_cost_and_epochs_of_steps_and_diagnostics():
    """head_job_seconds against the sum written out: fixed cost + epochs x (batches x stacked step + diagnostics)."""
    from havana.engine.step_counts import step_counts

    train = HeadTrainConfig(p=4, k=4, epochs=3)
    rates = costs.RATES[costs.CPU]
    with torch.device("meta"):
        flops = plan.head_step_flops(build_head(64, 10, HAVANA_ROW, train), 16)
    step = plan.head_step_seconds(costs.CPU, step_counts(HAVANA_ROW, train, 64, 10, 2), 2 * flops)
    batches = plan.batches_per_epoch(80, 10, 4, 4)
    expected = rates["head_job"].value + 3 * (batches * step + rates["head_diagnostics"].value * step)
    assert plan.head_job_seconds(costs.CPU, HAVANA_ROW, train, 64, 10, 80, 2, flops) == pytest.approx(expected)


def test_extractor_model_estimate_matches_the_real_file(tmp_path):
    config = ExtractorConfig(arch="resnet18", pretrained=False)
    save_extractor(tmp_path / "model.pt", build_extractor(config, 40), config, 40)
    shaped = plan._meta_extractor(config, 40)
    assert plan.state_bytes(shaped) == pytest.approx((tmp_path / "model.pt").stat().st_size, rel=0.05)


def test_head_step_flops_are_the_hand_count():
    dim, ids, batch = 8, 5, 4
    with torch.device("meta"):
        head = build_head(dim, ids, HAVANA_ROW, HeadTrainConfig())
    # f_mu 2 layers, decoder 2, classifier (bias-free), q_v (first + second: 2v out), p_z (first + second: z out)
    weights = 2 * dim * dim + 2 * dim * dim + dim * ids + (dim * dim + dim * 2 * dim) + (dim * dim + dim * dim)
    assert plan.head_step_flops(head, batch) == 6 * batch * weights


def test_extractor_flops_scale_with_the_image_area():
    model = plan._meta_extractor(ExtractorConfig(arch="resnet18", pretrained=False), 10)
    small, large = plan.extractor_forward_flops(model, (64, 32)), plan.extractor_forward_flops(model, (128, 64))
    assert 3.9 < large / small <= 4.0  # convolutions scale with the area; the classifier does not


def test_batches_per_epoch_is_the_samplers():
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(80), rng.integers(4, 12, 80))
    sampler = PKSampler(pids.tolist(), p=8, k=4, seed=0)
    assert plan.batches_per_epoch(len(pids), 80, 8, 4) == pytest.approx(len(sampler), rel=0.1)


def test_cli_prints_every_stage_the_totals_and_the_sources(capsys):
    assert main(["plan", "--config", str(CONFIGS["demo"])]) == 0
    out = capsys.readouterr().out
    for stage in plan.STAGES:
        assert f"\n{stage} " in out
    assert "\ntotal " in out and "measured" in out and "EXTRAPOLATED" in out


def test_a_missing_config_is_one_sentence(tmp_path, capsys):
    assert main(["plan", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("havana plan: error: config file") and "Traceback" not in err


@pytest.mark.parametrize("extractor", ["bot_r18_imported", "bot_r18_features"])
def test_imported_extractors_cost_no_extractor_hours(extractor, tmp_path):
    # the demo's two imports, from files of elsewhere (not the demo's own exports): a checkpoint costs its conversion
    # job's start-up and extraction but no training; a feature file its conversion job's start-up only
    config = load_yaml(CONFIGS["demo"])
    config["extractors"]["bot_r18_imported"]["import"]["checkpoint"] = str(tmp_path / "bot.pth")
    config["extractors"]["bot_r18_features"]["features"] = str(tmp_path / "features.npz")
    np.savez(tmp_path / "features.npz", train_features=np.zeros((1, 1, 512), np.float32))
    table2 = config["tables"]["table2"]
    table2["rows"] = [row for row in table2["rows"] if row["extractor"] == extractor]
    config["tables"], config["figures"] = {"table2": table2}, {}
    estimate = {stage.stage: stage for stage in plan.make_plan(config).stages}
    jobs = plan.planned_jobs(config)
    assert [job.stage for job in jobs["train_extractor"]] == (["import_extractor"] if "imported" in extractor else [])
    start = {kind: rates["torch_job"].value / 3600 for kind, rates in costs.RATES.items()}  # one conversion job
    converting = estimate["train_extractor"].hours
    assert converting == (pytest.approx(start) if "imported" in extractor else {kind: 0.0 for kind in start})
    extraction = estimate["extract_features"].hours
    assert (
        all(extraction[kind] > start[kind] for kind in start)
        if "imported" in extractor
        else (extraction == pytest.approx(start))
    )
    assert [job.stage for job in jobs["extract_features"]] == (
        ["extract_features"] if "imported" in extractor else ["import_features"]
    )
    assert estimate["train_head"].jobs == 1 and set(estimate["train_head"].hours.values()) != {0.0}


def test_measured_job_seconds_are_read_from_snakemakes_benchmark_files(tmp_path, capsys):
    """`havana plan --measured DIR` sums each stage's benchmark files (Snakemake's own format: `s` first) and prints
    them beside the plan's cpu estimate; a folder without them is one sentence."""
    from havana.cli import main
    from havana.dag.plan import measured_stages

    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rule, name, seconds in (
        ("train_head", "synthetic/bot_r18/havana", 12.5),
        ("train_head", "synthetic/bot_r18/vnae", 7.5),
        ("evaluate", "synthetic/bot_r18/havana", 4.0),
        ("tables", "table3", 0.5),
    ):
        path = tmp_path / "benchmarks" / rule / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:00:{int(seconds):02d}\t100\t0\t0\t0\t0\t0\t50\t{seconds}\n")
    assert measured_stages(tmp_path) == {"train_head": (2, 20.0), "evaluate": (1, 4.0), "tables_figures": (1, 0.5)}
    config = str(Path(__file__).resolve().parents[1] / "config" / "demo.yaml")
    assert main(["plan", "--config", config, "--measured", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train_head           2 jobs  measured      20.0" in out and "total" in out.split("measured on")[1]
    assert main(["plan", "--config", config, "--measured", str(tmp_path / "empty")]) == 2
    assert "holds no Snakemake benchmark files" in capsys.readouterr().err


def test_measured_rates_replace_the_plans_stage_by_stage():
    """`calibrated`: each stage's cpu hours times measured / planned of a run on this machine, in a column of its own,
    with a note naming the run; a stage the run did not measure keeps its estimate. A run with more jobs in a stage
    than the config plans is another config's: one sentence."""
    estimate = plan.make_plan(load_yaml(CONFIGS["demo"]), [costs.CPU])
    head = next(stage for stage in estimate.stages if stage.stage == "train_head")
    planned = 3600 * head.hours[costs.CPU]
    factors = plan.stage_factors(estimate, {"train_head": (head.jobs, 2 * planned)})
    assert factors == {"train_head": pytest.approx(2.0)}
    scaled = plan.calibrated(estimate, factors, "results/demo")
    hours = {stage.stage: stage.hours for stage in scaled.stages}
    assert hours["train_head"][plan.MEASURED] == pytest.approx(2 * head.hours[costs.CPU])
    assert hours["evaluate"][plan.MEASURED] == hours["evaluate"][costs.CPU]
    assert "results/demo" in scaled.notes[-1] and plan.MEASURED in plan.format_plan(scaled)
    with pytest.raises(HavanaError, match="give the config it was run with"):
        plan.stage_factors(estimate, {"train_head": (head.jobs + 1, planned)})

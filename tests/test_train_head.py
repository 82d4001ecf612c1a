"""Head training engine: improves mAP over nuisance-corrupted features, resumes bit-identically, stops on NaN, CLI."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_crash import crash_after_first_checkpoint

from havana.cli import main
from havana.config import from_mapping, load_yaml
from havana.data.features import FeatureFile, FeatureSplit, write_features
from havana.data.sampler import PKSampler
from havana.engine.train_head import (
    HeadRun,
    StackedHeads,
    StackedOptimizer,
    epoch_diagnostics,
    train_heads,
    train_one_epoch,
)
from havana.errors import HavanaError
from havana.evaluation import scoring
from havana.evaluation.rank import EvaluationConfig, evaluate
from havana.models.head import TERMS, HeadTrainConfig, RowConfig, build_head, load_head
from havana.utils.checkpointing import Checkpointer

DIM, VIEWS = 32, 2


def synthetic_features(train_ids=40, test_ids=20, per_id=6, seed=0) -> FeatureFile:
    """Identity signal in 4 directions, drowned by strong per-image nuisance in the other 28 directions."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0]
    signal, nuisance = basis[:, :4], basis[:, 4:]

    def split(num_ids, first_pid, views):
        centres = rng.normal(size=(num_ids, 4)) * 1.0
        pids = np.repeat(np.arange(first_pid, first_pid + num_ids), per_id)
        base = centres[pids - first_pid] @ signal.T + 0.1 * rng.normal(size=(len(pids), DIM))
        feats = base[:, None, :] + 1.5 * rng.normal(size=(len(pids), views, 28)) @ nuisance.T
        camids = np.tile(np.arange(per_id) % 2, num_ids)
        return FeatureSplit(feats.astype(np.float32), pids, camids, [f"{i}.jpg" for i in range(len(pids))])

    return FeatureFile(
        attrs={"dataset": "synthetic", "extractor": "toy"},
        splits={
            "train": split(train_ids, 1, VIEWS),
            "query": split(test_ids, 1000, 2),
            "gallery": split(test_ids, 1000, 2),
        },
    )


def fix_query_gallery(ff: FeatureFile) -> FeatureFile:
    """Query = the camera-0 images, gallery = the camera-1 images of the test identities."""
    test = ff["query"]
    q, g = test.camids == 0, test.camids == 1
    pick = lambda m: FeatureSplit(
        test.features[m], test.pids[m], test.camids[m], [p for p, k in zip(test.paths, m) if k]
    )
    return FeatureFile(ff.attrs, {"train": ff["train"], "query": pick(q), "gallery": pick(g)})


ROW = RowConfig(jst=True, reconx=True, klz=True, reconz=True, klv=True, constraint=True, beta=1.0)
TRAIN = HeadTrainConfig(epochs=60, lr=3e-3, weight_decay=5e-4, p=8, k=4, device="cpu")


RAW_MAP_MEASURED, HEAD_MAP_MEASURED, MAP_MARGIN = 0.158, 0.730, 0.03


def test_short_run_improves_map_over_raw_features(tmp_path):
    torch.set_num_threads(1)
    ff = fix_query_gallery(synthetic_features())
    q, g = ff["query"], ff["gallery"]
    raw = evaluate(q.features[:, 0], g.features[:, 0], q.pids, g.pids, q.camids, g.camids)["mAP"]
    [last] = train_heads(ff, ROW, TRAIN, [HeadRun(tmp_path, "havana", "synthetic", seed=0)], torch.device("cpu"))
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert history[0] == (
        "epoch,total,cls,triplet,jst,reconx,klz,reconz,klv,hard_pos,hard_neg,active,grad_cls,"
        "grad_triplet,grad_jst,grad_reconx,grad_klz,grad_reconz,grad_klv,lr"
    )
    assert len(history) == 1 + TRAIN.epochs and history[-1].split(",")[3] == "0"  # triplet off: 0
    assert last["total"] == float(history[-1].split(",")[1])
    # train_head writes the head, its history and provenance only; scoring is havana.evaluation.scoring's job.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.pt", "head.pt.provenance.yaml", "history.csv"]
    write_features(tmp_path / "f.h5", ff.splits, ff.attrs)
    features = scoring.read_test_features(tmp_path / "f.h5")
    scored = scoring.score_data(features, tmp_path / "head.pt", tmp_path / "f.h5", EvaluationConfig(max_rank=10))
    # Measured (torch 2.14.1 CPU, one thread, commit 9804909): raw features 0.158, the head 0.730. The raw figure is
    # numpy's draw alone; the head must reach its measured mAP less MAP_MARGIN.
    assert raw == pytest.approx(RAW_MAP_MEASURED, abs=0.005), raw
    assert scored.metrics["plain"]["mAP"] >= HEAD_MAP_MEASURED - MAP_MARGIN, (raw, scored.metrics["plain"]["mAP"])
    head = load_head(tmp_path / "head.pt")
    encoded = scoring.encode(head, q.features, logvar=True)
    z_mu, _ = head.encode(torch.from_numpy(q.features[:, 1]))
    np.testing.assert_allclose(encoded.mu[:, 1], z_mu.detach().numpy(), atol=1e-5)
    assert not encoded.logvar.any()  # constraint: z_sigma = I


def uneven_features(dim: int, seed: int = 2) -> FeatureFile:
    """10 identities of 2 to 7 images: the P x K plans of different seeds have different lengths in some epochs."""
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(10), rng.integers(2, 8, 10))
    split = FeatureSplit(
        rng.normal(size=(len(pids), VIEWS, dim)).astype(np.float32),
        pids,
        np.zeros(len(pids), dtype=np.int64),
        [f"{i}.jpg" for i in range(len(pids))],
    )
    return FeatureFile({"dataset": "synthetic", "extractor": "toy"}, {"train": split})


def max_difference(tmp_path, ff, row, train, seeds):
    """Train `seeds` stacked in one call and each seed alone; the largest |difference| of any parameter of any head,
    with the histories checked equal to 1e-6 too."""
    cpu = torch.device("cpu")
    train_heads(ff, row, train, [HeadRun(tmp_path / f"stacked{s}", "r", "synthetic", seed=s) for s in seeds], cpu)
    worst = 0.0
    for seed in seeds:
        train_heads(ff, row, train, [HeadRun(tmp_path / f"alone{seed}", "r", "synthetic", seed=seed)], cpu)
        stacked, alone = (
            torch.load(tmp_path / f"{kind}{seed}" / "head.pt", weights_only=True)["state_dict"]
            for kind in ("stacked", "alone")
        )
        assert stacked.keys() == alone.keys()
        worst = max(worst, *(float((stacked[k] - alone[k]).abs().max()) for k in stacked))
        histories = [
            np.loadtxt(tmp_path / f"{kind}{seed}" / "history.csv", delimiter=",", skiprows=1)
            for kind in ("stacked", "alone")
        ]
        np.testing.assert_allclose(*histories, atol=1e-6)
        assert not (tmp_path / f"stacked{seed}" / "checkpoint.pt").exists()
    return worst


@pytest.mark.parametrize("name", ["havana", "vnae_jst_hvd", "vnae_jst"])
def test_seeds_trained_stacked_equal_each_seed_trained_alone(tmp_path, name):
    """Issue 11 item 4: one job trains the seeds of a row stacked (vmap); each head must be the one its seed gives
    alone, every parameter to 1e-6: havana (every term, C on: HVD noise), vnae_jst_hvd and vnae_jst (learned sigma). The
    identities are uneven, so some epoch's plans differ in length and the shorter plans' heads are masked."""
    torch.set_num_threads(1)
    ff = uneven_features(16)
    row = from_mapping(RowConfig, PAPER_ROWS[name], name).with_beta(1.0)
    train = HeadTrainConfig(epochs=3, lr=1e-3, p=4, k=2, device="cpu", checkpoint_minutes=0)
    plans = []
    for epoch in range(train.epochs):
        samplers = [PKSampler(ff["train"].pids.tolist(), p=4, k=2, seed=seed) for seed in (0, 1, 2)]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        plans.append([len(sampler) for sampler in samplers])
    assert any(len(set(epoch)) > 1 for epoch in plans), plans  # masked steps happen
    worst = max_difference(tmp_path, ff, row, train, [0, 1, 2])
    print(f"{name}: max |stacked - alone| over every parameter of seeds 0, 1, 2: {worst:.1e}")
    assert worst <= 1e-6


def test_seeds_stacked_equal_alone_at_paper_width(tmp_path):
    """The same at 2048-d (paper width), every term on, two epochs of one step."""
    torch.set_num_threads(1)
    ff = uneven_features(2048)
    train = HeadTrainConfig(epochs=2, lr=1e-5, p=8, k=2, device="cpu")
    worst = max_difference(tmp_path, ff, ROW, train, [0, 1, 2])
    print(f"2048-d havana: max |stacked - alone| over every parameter of seeds 0, 1, 2: {worst:.1e}")
    assert worst <= 1e-6


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_stacked_optimizer_equals_torch_optim_on_each_head(optimizer):
    """StackedOptimizer on 3 stacked parameter sets = torch.optim.Adam / SGD(momentum 0.9) on each alone, with head 1
    masked on steps 2 and 3 (it then equals a torch optimizer that skipped those steps)."""
    torch.manual_seed(0)
    train = HeadTrainConfig(lr=1e-2, weight_decay=5e-4, optimizer=optimizer)
    shapes = {"w": (5, 3), "b": (5,)}
    alone = [{name: torch.randn(shape, requires_grad=True) for name, shape in shapes.items()} for _ in range(3)]
    stacked = {name: torch.stack([p[name].detach() for p in alone]).clone() for name in shapes}
    stepper = StackedOptimizer(stacked, train)
    torch_optimizers = [
        torch.optim.Adam(p.values(), lr=train.lr, weight_decay=train.weight_decay, fused=True)
        if optimizer == "adam"
        else torch.optim.SGD(p.values(), lr=train.lr, weight_decay=train.weight_decay, momentum=0.9)
        for p in alone
    ]
    for step in range(6):
        grads = {name: torch.randn(3, *shape) for name, shape in shapes.items()}
        active = torch.tensor([True, step not in (2, 3), True])
        stepper.step(grads, active)
        for head, (params, torch_optimizer) in enumerate(zip(alone, torch_optimizers)):
            if active[head]:
                for name, p in params.items():
                    p.grad = grads[name][head].clone()
                torch_optimizer.step()
    for head, params in enumerate(alone):
        for name, p in params.items():
            torch.testing.assert_close(stacked[name][head], p.detach(), atol=1e-6, rtol=0)
    assert stepper.steps[:, 0].tolist() == [6.0, 4.0, 6.0]


@pytest.mark.parametrize("minutes, where", [(0, "epoch 1"), (1e-9, "epoch 1, step 1")])
def test_resume_after_a_crash_equals_uninterrupted(tmp_path, monkeypatch, minutes, where):
    """minutes 0: a checkpoint at each epoch end; 1e-9: one after every step, so the crash comes mid-epoch. Two seeds
    stacked on uneven identities (their plans differ in length: masked steps after the resume point)."""
    torch.set_num_threads(1)
    ff = uneven_features(16)
    row = RowConfig(jst=True, reconx=True, klz=True, klv=True, beta=1.0)  # no constraint: sigma and HVD sampling
    train = dataclasses.replace(TRAIN, epochs=2, p=4, k=2, checkpoint_minutes=minutes)
    runs = lambda name: [HeadRun(tmp_path / name / f"seed{s}", "r", "synthetic", seed=s) for s in (0, 1)]  # noqa: E731
    train_heads(ff, row, train, runs("whole"), torch.device("cpu"))
    crash_after_first_checkpoint(monkeypatch)
    with pytest.raises(SystemExit, match=f"killed after {where}$"):
        train_heads(ff, row, train, runs("cut"), torch.device("cpu"))
    cut = tmp_path / "cut"
    assert (cut / "seed0" / "checkpoint.pt").is_file() and not list(cut.glob("*/head.pt"))
    train_heads(ff, row, train, runs("cut"), torch.device("cpu"))
    for seed in ("seed0", "seed1"):
        whole, cut = (
            torch.load(tmp_path / d / seed / "head.pt", weights_only=True)["state_dict"] for d in ("whole", "cut")
        )
        assert all(torch.equal(whole[k], cut[k]) for k in whole)
        assert (tmp_path / "whole" / seed / "history.csv").read_text() == (
            tmp_path / "cut" / seed / "history.csv"
        ).read_text()
    assert not list((tmp_path / "cut").glob("*/checkpoint.pt"))  # finished heads keep no checkpoint


def test_nan_features_stop_with_the_epoch_and_term(tmp_path):
    ff = synthetic_features(train_ids=8, test_ids=4, per_id=4)
    ff["train"].features[3, :, 0] = np.nan
    with pytest.raises(HavanaError, match=r"'total' is nan in epoch 0"):
        train_heads(
            ff,
            ROW,
            dataclasses.replace(TRAIN, epochs=1, p=4, k=2),
            [HeadRun(tmp_path, "havana", "synthetic")],
            torch.device("cpu"),
        )
    assert not (tmp_path / "head.pt").exists() and not (tmp_path / "checkpoint.pt").exists()


def test_cli_trains_a_config_row(tmp_path, capsys):
    ff = fix_query_gallery(synthetic_features(train_ids=8, test_ids=4, per_id=4))
    write_features(tmp_path / "toy.h5", ff.splits, ff.attrs)
    (tmp_path / "cfg.yaml").write_text(
        "heads:\n  train: {epochs: 1, p: 4, k: 2, device: cpu}\n  beta_by_dataset: {synthetic: 1.0}\n"
        "  rows:\n    vnae: {triplet: true, jst: false, reconx: true, klz: true}\n"
        "evaluation: {metric: euclidean, max_rank: 5}\n"
    )
    assert (
        main(
            [
                "train-head",
                "--features",
                str(tmp_path / "toy.h5"),
                "--row",
                "vnae",
                "--config",
                str(tmp_path / "cfg.yaml"),
                "--out",
                str(tmp_path / "out"),
                "--seed",
                "0",
            ]
        )
        == 0
    )
    assert "trained for 1 epochs" in capsys.readouterr().out and (tmp_path / "out" / "head.pt").is_file()
    assert (
        main(
            [
                "train-head",
                "--features",
                str(tmp_path / "toy.h5"),
                "--row",
                "vnae",
                "--config",
                str(tmp_path / "cfg.yaml"),
                "--out",
                str(tmp_path / "s1"),
                str(tmp_path / "s2"),
                "--seeds",
                "1",
                "2",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.count("trained for 1 epochs") == 2
    assert all((tmp_path / f"s{seed}" / name).is_file() for seed in (1, 2) for name in ("head.pt", "history.csv"))
    assert (
        main(
            [
                "train-head",
                "--features",
                str(tmp_path / "toy.h5"),
                "--row",
                "vnae",
                "--config",
                str(tmp_path / "cfg.yaml"),
                "--out",
                str(tmp_path / "s3"),
                "--seeds",
                "1",
                "2",
            ]
        )
        == 2
    )
    assert "one --out folder (and one --run-name, if any) per seed: 2 seeds, 1 --out" in capsys.readouterr().err
    assert (
        main(
            [
                "train-head",
                "--features",
                str(tmp_path / "toy.h5"),
                "--row",
                "nope",
                "--config",
                str(tmp_path / "cfg.yaml"),
                "--out",
                str(tmp_path / "out2"),
            ]
        )
        == 2
    )
    assert "no 'nope'" in capsys.readouterr().err


PAPER_ROWS = load_yaml(Path(__file__).resolve().parents[1] / "config" / "config.yaml")["heads"]["rows"]


@pytest.mark.parametrize("name", sorted(PAPER_ROWS))
def test_every_paper_row_trains_each_term_it_switches_on_at_2048_d(name):
    """One epoch of each config/config.yaml row on 2048-d features at BNNeck scale: every term the row switches on
    has a non-zero share of the gradient norm on z_mu (no dead term), every term it switches off has none."""
    torch.set_num_threads(1)
    row = from_mapping(RowConfig, PAPER_ROWS[name], name).with_beta(1.0)
    train = HeadTrainConfig(epochs=1, lr=1e-5, p=4, k=4, device="cpu")
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)
    # identities in look-alike pairs (centres 0.1 apart per dimension, images 0.4): hard triplets, as on real data
    centres = (torch.randn(2, 2048, generator=g) * 0.6).repeat_interleave(2, 0) + torch.randn(
        4, 2048, generator=g
    ) * 0.1
    features = centres[labels] + torch.randn(16, 2048, generator=g) * 0.4
    features = features.unsqueeze(1)  # [N, V = 1, D]
    torch.manual_seed(0)
    stack = StackedHeads([build_head(2048, 4, row, train)], row, train.label_smoothing)
    sampler = PKSampler(labels.tolist(), p=4, k=4, seed=0)
    [means] = train_one_epoch(stack, StackedOptimizer(stack.params, train), features, labels, [sampler], row, 0, [0])
    diagnostics = epoch_diagnostics(stack.head(0), features, labels, sampler, row, train, 0, 0)
    shares = {term: diagnostics[f"grad_{term}"] for term in TERMS}
    print(name, {term: f"{share:.2e}" for term, share in shares.items() if share})
    for term in TERMS:
        if getattr(row, term):
            assert shares[term] > 0 and np.isfinite(means[term]), (term, shares)
        else:
            assert shares[term] == 0 and term not in means, (term, shares)
    assert abs(sum(shares.values()) - 1.0) < 1e-6
    if row.triplet or row.jst:
        assert 0 < diagnostics["hard_pos"] and 0 < diagnostics["hard_neg"] and 0 <= diagnostics["active"] <= 1


def _trainer(tmp_path, out, epochs, minutes):
    """`havana train-head` in its own process, on one thread, on a 16-identity toy feature file (8 steps per epoch)."""
    import os
    import subprocess
    import sys

    features, config = tmp_path / "toy.h5", tmp_path / f"cfg{minutes}.yaml"
    if not features.is_file():
        ff = fix_query_gallery(synthetic_features(train_ids=16, test_ids=4, per_id=4))
        write_features(features, ff.splits, ff.attrs)
    config.write_text(
        f"heads:\n  train: {{epochs: {epochs}, lr: 3.0e-3, p: 4, k: 2, device: cpu, "
        f"checkpoint_minutes: {minutes}}}\n  rows:\n    r: {{jst: true, klv: true, beta: 1.0}}\n"
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "havana",
            "train-head",
            "--features",
            str(features),
            "--row",
            "r",
            "--config",
            str(config),
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_a_real_process_stopped_by_a_signal_resumes_bit_identically(tmp_path, signal_name):
    """SIGTERM (preemption, scancel): the step finishes, a checkpoint is written, exit non-zero with one sentence.
    SIGKILL right after an epoch checkpoint (interval 0): nothing but the checkpoint survives. Both reruns end with
    the weights and history of an uninterrupted run, and no checkpoint is left."""
    import signal
    import time

    epochs, minutes = 6, (60.0 if signal_name == "SIGTERM" else 0)  # SIGTERM: no timed checkpoint before it
    proc = _trainer(tmp_path, tmp_path / "cut", epochs, minutes)
    history = tmp_path / "cut" / "history.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not history.is_file() or len(history.read_text().splitlines()) < 3):
        time.sleep(0.01)  # two epochs done: the signal lands inside a later epoch
    if signal_name == "SIGKILL":
        while not (tmp_path / "cut" / "checkpoint.pt").is_file():
            time.sleep(0.01)
    proc.send_signal(getattr(signal, signal_name))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and not (tmp_path / "cut" / "head.pt").exists()
    if signal_name == "SIGTERM":
        message = [line for line in err.splitlines() if "havana" in line]  # one sentence under the progress bar
        assert len(message) == 1 and "stopped by SIGTERM after epoch" in message[0], err
        assert "rerunning the same command resumes" in message[0] and "Traceback" not in err
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    for out in ("cut", "whole"):
        done = _trainer(tmp_path, tmp_path / out, epochs, minutes)
        _, err = done.communicate(timeout=600)
        assert done.returncode == 0, err
    whole, cut = (torch.load(tmp_path / d / "head.pt", weights_only=True)["state_dict"] for d in ("whole", "cut"))
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    assert (tmp_path / "whole" / "history.csv").read_text() == history.read_text()
    assert not (tmp_path / "cut" / "checkpoint.pt").exists() and not (tmp_path / "whole" / "checkpoint.pt").exists()


def test_a_2048d_head_writes_at_most_4_5x_its_head_even_when_preempted_once(tmp_path, monkeypatch):
    """Issue 11: a 2048-d head of 4 epochs wrote 13x its head.pt (a 3x checkpoint every epoch) and kept the last one.
    Bytes written are counted as the engine writes them: every checkpoint's size, then the head.pt files. A job of two
    seeds killed right after its epoch-1 checkpoint and rerun with the default 10-minute interval writes that one
    checkpoint (both heads' weights + Adam's two moments: 3x per head) and the two head.pt, at most 4.5x per head;
    uninterrupted it would write the head.pt files alone. None is left."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(4), 4)
    split = FeatureSplit(
        rng.normal(size=(16, 1, 2048)).astype(np.float32),
        pids,
        np.zeros(16, dtype=np.int64),
        [f"{i}.jpg" for i in range(16)],
    )
    ff = FeatureFile({"dataset": "synthetic", "extractor": "toy"}, {"train": split})
    row = RowConfig(triplet=True, jst=False, reconx=True, klz=False, beta=1.0)  # f_mu, decoder, classifier
    train = HeadTrainConfig(epochs=4, lr=1e-5, p=4, k=4, device="cpu")  # checkpoint_minutes: the default 10
    runs = [HeadRun(tmp_path / f"seed{seed}", "r", "synthetic", seed=seed) for seed in (0, 1)]
    checkpoint = tmp_path / "seed0" / "checkpoint.pt"  # the job's one checkpoint, in its first head's folder
    crash_after_first_checkpoint(monkeypatch)
    with pytest.raises(SystemExit, match="killed after epoch 1$"):
        train_heads(ff, row, dataclasses.replace(train, checkpoint_minutes=0), runs, torch.device("cpu"))
    checkpoint_bytes = checkpoint.stat().st_size
    written: list[int] = []
    save = Checkpointer.save

    def counted(self, state, where):
        save(self, state, where)
        written.append(self.path.stat().st_size)

    monkeypatch.setattr(Checkpointer, "save", counted)
    train_heads(ff, row, train, runs, torch.device("cpu"))
    head_bytes = sum((run.out_dir / "head.pt").stat().st_size for run in runs)
    total = checkpoint_bytes + sum(written) + head_bytes
    assert written == [] and not list(tmp_path.glob("*/checkpoint.pt"))  # epochs 2-4: none within 10 minutes
    assert 2.9 < checkpoint_bytes / head_bytes < 3.1 and total <= 4.5 * head_bytes, (checkpoint_bytes, head_bytes)
    print(
        f"2048-d heads, 2 seeds, 4 epochs: head.pt {head_bytes / 2e6:.1f} MB each, checkpoint "
        f"{checkpoint_bytes / 1e6:.1f} MB, written when preempted once {total / head_bytes:.2f}x the head.pt files "
        "(uninterrupted: 1.00x)"
    )

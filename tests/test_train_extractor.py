"""Extractor training engine: lr schedule, loss on a hand-built batch, exact resume, NaN guard, checkpoint checks."""

import math

import pytest
import torch
from checkpoint_crash import crash_after_first_checkpoint
from image_folder import make_image_folder
from test_progress import epoch_lines

from havana.engine.train_extractor import extractor_loss, lr_scheduler, train_extractor, warmup_multistep_factor
from havana.errors import HavanaError
from havana.layout import IMAGE_CACHE_FILE
from havana.models.extractor import ExtractorOutput, load_extractor
from havana.models.extractor_config import ExtractorConfig, ExtractorTrainConfig, TransformConfig

torch.set_num_threads(2)


def tiny_config(epochs: int, **train) -> ExtractorConfig:
    return ExtractorConfig(
        arch="resnet18",
        pretrained=False,
        image_size=(32, 16),
        transforms=TransformConfig(padding=2),
        train=ExtractorTrainConfig(
            **{
                "epochs": epochs,
                "p": 3,
                "k": 2,
                "warmup_epochs": 2,
                "milestones": (2,),
                "num_workers": 0,
                "device": "cpu",
                **train,
            }
        ),
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"))


def bot_lr(epoch: int, base: float = 3.5e-4) -> float:
    """BoT's lr in 1-based epoch e (its WarmupMultiStepLR stepped at each epoch's start, so counter = e)."""
    factor = 0.01 + 0.99 * epoch / 10 if epoch < 10 else 1.0
    return base * factor * (0.1 if epoch >= 40 else 1.0) * (0.1 if epoch >= 70 else 1.0)


def test_engine_schedule_gives_bot_lr_in_each_epoch():
    train = ExtractorTrainConfig()  # the paper's: warm-up 10 epochs from 0.01, steps at 40 and 70, stepped as BoT
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
    scheduler = lr_scheduler(optimizer, train)
    seen = {}
    for epoch in range(1, 72):  # the engine trains an epoch, then steps the scheduler
        seen[epoch] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    for epoch in (1, 10, 11, 40, 41, 70, 71):
        assert seen[epoch] == pytest.approx(bot_lr(epoch), rel=1e-12), epoch
    assert seen[1] == pytest.approx(3.815e-5) and seen[39] / seen[40] == pytest.approx(10)


def test_epoch_end_schedule_is_one_epoch_late():
    late = ExtractorTrainConfig(schedule_step="epoch_end")
    for epoch in (1, 10, 11, 40, 41, 70, 71):
        expected = bot_lr(epoch - 1) if epoch > 1 else 3.5e-6  # counter 0: the bare warm-up factor
        assert warmup_multistep_factor(epoch, late) * late.lr == pytest.approx(expected)


def test_loss_on_a_hand_built_batch():
    labels = torch.tensor([0, 0, 1, 1])
    features = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    # zero logits: CE = log(C) whatever the smoothing; triplet: only anchor 3.0 is active (2 - 2 + 0.3) -> 0.3 / 4
    output = ExtractorOutput(logits=[torch.zeros(4, 5)], triplet_features=[features])
    loss, parts = extractor_loss(output, labels, ExtractorTrainConfig())
    assert parts["ce"] == pytest.approx(math.log(5))
    assert parts["triplet"] == pytest.approx(0.075)
    assert float(loss) == pytest.approx(math.log(5) + 0.075)
    two = ExtractorOutput(logits=[torch.zeros(4, 5)] * 2, triplet_features=[features] * 2)
    assert float(extractor_loss(two, labels, ExtractorTrainConfig())[0]) == pytest.approx(2 * float(loss))


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.parametrize(
    "loader, workers, minutes, where",
    [
        ("pil", 0, 0, "epoch 1"),
        ("pil", 1, 1e-9, "epoch 1, step 1"),
        ("decoded", 0, 0, "epoch 1"),
        ("decoded", 1, 1e-9, "epoch 1, step 1"),
    ],
)
def test_killed_after_a_checkpoint_and_resumed_equals_uninterrupted(
    manifest, tmp_path, monkeypatch, loader, workers, minutes, where, capfd
):
    """minutes 0: a checkpoint at each epoch end; 1e-9: after every step, so the crash comes inside epoch 1 and the
    resumed run re-reads its first batch (with the loader's worker, if any; the decoded path skips it) before
    training on the second. The decoded path's image cache survives the crash and is gone once model.pt exists."""
    config = tiny_config(2, num_workers=workers, checkpoint_minutes=minutes, loader=loader)
    whole = train_extractor(manifest, config, tmp_path / "whole", seed=4)
    epochs = epoch_lines(capfd.readouterr().err, "train-extractor whole")  # a log gets one plain line per epoch
    assert [m["done"] for m in epochs] == ["1", "2"]
    assert all(f"{term} " in epochs[-1]["rest"] for term in ("loss", "ce", "triplet", "accuracy", "lr", "images/s"))
    crash_after_first_checkpoint(monkeypatch)
    with pytest.raises(SystemExit, match=f"killed after {where}$"):
        train_extractor(manifest, config, tmp_path / "resumed", seed=4)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    assert (tmp_path / "resumed" / IMAGE_CACHE_FILE).is_file() == (loader == "decoded")
    resumed = train_extractor(manifest, config, tmp_path / "resumed", seed=4)
    a, b = _weights(whole.model_path), _weights(resumed.model_path)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert whole.last_metrics["loss"] == resumed.last_metrics["loss"]
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()  # removed once model.pt exists
    assert not list((tmp_path / "resumed").glob(IMAGE_CACHE_FILE + "*"))  # the cache and its record too
    model, config = load_extractor(whole.model_path)
    assert config.train.epochs == 2 and model.classifier.out_features == 6
    assert (whole.model_path.parent / "model.pt.provenance.yaml").is_file()


def test_checkpoint_of_another_config_is_refused(manifest, tmp_path, monkeypatch):
    crash_after_first_checkpoint(monkeypatch)
    with pytest.raises(SystemExit):
        train_extractor(manifest, tiny_config(2, checkpoint_minutes=0), tmp_path / "run", seed=0)
    with pytest.raises(HavanaError, match="different config"):
        train_extractor(manifest, tiny_config(2, lr=1e-3), tmp_path / "run", seed=0)


def test_a_checkpoint_of_one_loader_is_refused_by_the_other(manifest, tmp_path, monkeypatch):
    # their augmentations draw differently, so resuming one with the other would be neither run
    crash_after_first_checkpoint(monkeypatch)
    with pytest.raises(SystemExit):
        train_extractor(manifest, tiny_config(2, checkpoint_minutes=0), tmp_path / "run", seed=0)
    with pytest.raises(HavanaError, match="different config"):
        train_extractor(manifest, tiny_config(2, loader="decoded"), tmp_path / "run", seed=0)


def test_without_random_augmentation_both_loaders_train_the_same_weights(manifest, tmp_path):
    # oracle: the "pil" path. With flip, crop and erasing off both give the same normalised images (normalize_batch is
    # bit-identical to ToTensor + Normalize) in the sampler's batches, so the weights must be equal bit for bit
    plain = TransformConfig(flip=False, pad_crop=False, random_erasing=False)
    runs = {}
    for loader in ("pil", "decoded"):
        config = tiny_config(1, loader=loader)
        config.transforms = plain
        runs[loader] = _weights(train_extractor(manifest, config, tmp_path / loader, seed=1).model_path)
    for name in runs["pil"]:
        assert torch.equal(runs["pil"][name], runs["decoded"][name]), name


def test_diverging_loss_stops_with_epoch_and_iteration(manifest, tmp_path):
    with pytest.raises(HavanaError, match=r"diverged.*epoch \d+, iteration \d+"):
        train_extractor(manifest, tiny_config(3, lr=1e30, warmup_factor=1.0), tmp_path / "nan", seed=0)
    assert not (tmp_path / "nan" / "model.pt").exists()


def test_a_checkpoint_from_before_the_bot_settings_still_resumes_under_its_old_behaviour():
    # oracle: the resume key the code before issue 21 computed for this config (measured on that commit, 3910fa2);
    # the settings added since, set to the behaviour they replace, must give the same key
    from havana.engine.train_extractor import _checkpoint_key

    before = "0dc039a9548d3259c0d7595889ba3855ad18b2e3340259079e4d5858828d2791"
    legacy = ExtractorConfig(
        arch="resnet18",
        pretrained=False,
        image_size=(64, 32),
        transforms=TransformConfig(interpolation="bicubic", erasing_draw="torchvision", erasing_fill="zero"),
        train=ExtractorTrainConfig(schedule_step="epoch_end", amp=True),
    )
    assert _checkpoint_key(legacy, 0, "abc")["config_hash"] == before
    assert _checkpoint_key(ExtractorConfig(arch="resnet18", pretrained=False, image_size=(64, 32)), 0, "abc") != (
        _checkpoint_key(legacy, 0, "abc")
    )  # BoT's recipe is another training: a checkpoint of the old one is refused


# ------------------------------------------------------------------------- a real process stopped by a signal

KILL_EPOCHS = 2


def _extractor_process(root, out, minutes):
    """`havana train-extractor` in its own process on one thread: resnet18 on 32x16 images, 12 identities of 4
    images, 8 steps of 3 x 2 per epoch, KILL_EPOCHS epochs, a checkpoint every `minutes` (0: each epoch end)."""
    import os
    import subprocess
    import sys

    import yaml

    manifest = root / "images" / "manifest.csv"
    if not manifest.is_file():
        make_image_folder(root / "images", train_ids=12, per_id=4)
    train = {"epochs": KILL_EPOCHS, "p": 3, "k": 2, "warmup_epochs": 2, "milestones": [2], "num_workers": 0}
    extractor = {"arch": "resnet18", "pretrained": False, "image_size": [32, 16], "transforms": {"padding": 2}}
    extractor["train"] = {**train, "device": "cpu", "checkpoint_minutes": minutes}
    config = root / f"config_{minutes}.yaml"
    config.write_text(yaml.safe_dump({"extractors": {"tiny": extractor}}))
    argv = ["train-extractor", "--manifest", manifest, "--config", config, "--extractor", "tiny", "--out", out]
    return subprocess.Popen(
        [sys.executable, "-m", "havana", *map(str, argv), "--seed", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _stderr_lines(proc) -> list[str]:
    """The process's stderr lines as they come (read by a thread, so the pipe never fills)."""
    import threading

    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    return lines


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """model.pt of the same job run once without interruption (and without timed checkpoints)."""
    root = tmp_path_factory.mktemp("extractor_kill")
    proc = _extractor_process(root, root / "whole", 60.0)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return root, root / "whole"


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_a_real_process_stopped_by_a_signal_resumes_bit_identically(uninterrupted, signal_name):
    """SIGTERM inside epoch 2 (no timed checkpoint before it): the step finishes, a checkpoint is written, exit
    non-zero with one sentence. SIGKILL inside epoch 2, the job checkpointing at each epoch end: nothing runs after
    it (no cleanup), only the epoch-1 checkpoint survives. Both reruns resume in epoch 2 (their log shows that epoch
    alone) and end with the weights of the uninterrupted run, the same files and no
    checkpoint or temporary left. (checkpoint_crash's in-process "crash" is a SystemExit, which runs every cleanup.)"""
    import signal
    import time

    root, whole = uninterrupted
    out = root / signal_name
    minutes = 60.0 if signal_name == "SIGTERM" else 0
    proc = _extractor_process(root, out, minutes)
    err_lines = _stderr_lines(proc)
    deadline = time.monotonic() + 300

    def epochs_shown(lines: list[str]) -> list[str]:
        return [m["done"] for m in epoch_lines("".join(lines), f"train-extractor {out.name}")]

    while time.monotonic() < deadline and proc.poll() is None and not epochs_shown(err_lines):
        time.sleep(0.005)  # epoch 1 done: the signal lands inside epoch 2
    if signal_name == "SIGKILL":  # and after the epoch-end checkpoint (interval 0: the job's only one)
        while time.monotonic() < deadline and proc.poll() is None and not (out / "checkpoint.pt").is_file():
            time.sleep(0.005)
    proc.send_signal(getattr(signal, signal_name))
    proc.wait(timeout=300)
    time.sleep(0.2)  # the reader thread takes the last lines
    err = "".join(err_lines)
    if signal_name == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, err[-3000:])
    else:  # it handled the signal and exited with an error status of its own, not killed by it
        assert proc.returncode > 0, (proc.returncode, err[-3000:])
    assert not (out / "model.pt").exists() and (out / "checkpoint.pt").is_file()
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1, state["epoch"]  # 0-based: epoch 2 is the one to run
    # SIGTERM: inside epoch 2, at a step (the rerun restores the step and its RNG); SIGKILL: at its start (the epoch's)
    assert (state["within"] is not None) == (signal_name == "SIGTERM"), state["within"]
    if signal_name == "SIGTERM":
        message = [line for line in err.splitlines() if "havana" in line]
        assert len(message) == 1 and "stopped by SIGTERM after epoch 2, step" in message[0], err
        assert "Traceback" not in err
    left = sorted(p.name for p in out.iterdir())
    rerun = _extractor_process(root, out, minutes)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    assert epochs_shown([err]) == ["2"], (left, err[-3000:])  # resumed in epoch 2, not restarted
    a, b = _weights(whole / "model.pt"), _weights(out / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())  # no checkpoint, no temp

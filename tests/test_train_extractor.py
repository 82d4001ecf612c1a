"""Extractor training engine: lr schedule, loss on a hand-built batch, exact resume, NaN guard, checkpoint checks."""

import math

import pytest
import torch
from checkpoint_crash import crash_after_first_checkpoint
from image_folder import make_image_folder
from test_progress import epoch_lines

from havana.engine.train_extractor import extractor_loss, lr_scheduler, train_extractor, warmup_multistep_factor
from havana.errors import HavanaError
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


@pytest.mark.parametrize("workers, minutes, where", [(0, 0, "epoch 1"), (1, 1e-9, "epoch 1, step 1")])
def test_killed_after_a_checkpoint_and_resumed_equals_uninterrupted(
    manifest, tmp_path, monkeypatch, workers, minutes, where, capfd
):
    """minutes 0: a checkpoint at each epoch end; 1e-9: after every step, so the crash comes inside epoch 1 and the
    resumed run re-reads its first batch (with the loader's worker, if any) before training on the second."""
    config = tiny_config(2, num_workers=workers, checkpoint_minutes=minutes)
    whole = train_extractor(manifest, config, tmp_path / "whole", seed=4)
    epochs = epoch_lines(capfd.readouterr().err, "train-extractor whole")  # a log gets one plain line per epoch
    assert [m["done"] for m in epochs] == ["1", "2"]
    assert all(f"{term} " in epochs[-1]["rest"] for term in ("loss", "ce", "triplet", "accuracy", "lr", "images/s"))
    crash_after_first_checkpoint(monkeypatch)
    with pytest.raises(SystemExit, match=f"killed after {where}$"):
        train_extractor(manifest, config, tmp_path / "resumed", seed=4)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    resumed = train_extractor(manifest, config, tmp_path / "resumed", seed=4)
    a, b = _weights(whole.model_path), _weights(resumed.model_path)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert whole.last_metrics["loss"] == resumed.last_metrics["loss"]
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()  # removed once model.pt exists
    model, config = load_extractor(whole.model_path)
    assert config.train.epochs == 2 and model.classifier.out_features == 6
    assert (whole.model_path.parent / "model.pt.provenance.yaml").is_file()


def test_checkpoint_of_another_config_is_refused(manifest, tmp_path, monkeypatch):
    crash_after_first_checkpoint(monkeypatch)
    with pytest.raises(SystemExit):
        train_extractor(manifest, tiny_config(2, checkpoint_minutes=0), tmp_path / "run", seed=0)
    with pytest.raises(HavanaError, match="different config"):
        train_extractor(manifest, tiny_config(2, lr=1e-3), tmp_path / "run", seed=0)


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

"""Checkpoint import: each format's converted state dict, in havana's BoT extractor, gives that framework's test feature
(max abs difference ≤ 1e-5 against an independent reference forward), and every bad input is refused in one sentence.

Small inputs (batch 2, 64×32) keep ResNet-50 on one CPU thread to a fraction of a second per forward.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import reid_checkpoints as F
import torch
from torch import nn

from havana.data.transforms import normalize_batch
from havana.errors import HavanaError
from havana.models.extractor import build_extractor
from havana.models.extractor_config import ExtractorConfig, TransformConfig
from havana.models.importing import convert_checkpoint, imported_config, load_checkpoint_file

torch.set_num_threads(1)
TOLERANCE = 1e-5
MEASURED: dict[str, float] = {}  # max abs differences, printed by the last test for the report


def havana_extractor(state: dict[str, torch.Tensor], arch: str, fmt: str | None) -> nn.Module:
    """havana's extractor built with the format's settings (None: havana's default torchvision stem), loaded
    strictly from the converted state dict."""
    if fmt is None:
        config = ExtractorConfig(arch=arch, pretrained=False)
    else:
        config = imported_config(fmt, arch, (64, 32))
    with torch.device("meta"):
        model = build_extractor(config, num_classes=state["classifier.weight"].shape[0])
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


@torch.no_grad()
def havana_feature(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The test feature as `havana extract` computes it: uint8 → normalize_batch → model in eval mode."""
    return model(normalize_batch(images, TransformConfig()))


def one_sentence(message: str) -> bool:
    return message.endswith(".") and "\n" not in message and len(re.findall(r"\.\s+[A-Z]", message)) == 0


CASES = {
    "bot": (lambda: F.bot_checkpoint(num_classes=751), F.bot_reference),
    "bot-neck-no": (lambda: F.bot_checkpoint(num_classes=702, neck=False), F.bot_reference),
    "fastreid": (lambda: F.fastreid_checkpoint(num_classes=1041), F.fastreid_reference),
    "fastreid-v1.0": (lambda: F.fastreid_checkpoint(num_classes=751, version="v1.0"), F.fastreid_reference),
    "torchreid": (lambda: F.torchreid_checkpoint(num_classes=751), F.torchreid_reference),
    "torchreid-dataparallel": (
        lambda: F.torchreid_checkpoint(num_classes=13, data_parallel=True),
        F.torchreid_reference,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_imported_feature_equals_reference(case: str, tmp_path: Path) -> None:
    fmt, arch = case.split("-")[0], "resnet50"
    make, reference = CASES[case]
    path = tmp_path / "source.pth"
    torch.save(make(), path)  # through a file, as the CLI will read it
    checkpoint = load_checkpoint_file(str(path))
    state = convert_checkpoint(checkpoint, fmt, arch)
    model = havana_extractor(state, arch, fmt)
    images = F.images_uint8()
    got, want = havana_feature(model, images), reference(checkpoint, arch, images)
    diff = (got - want).abs().max().item()
    MEASURED[case] = diff
    assert got.shape == want.shape == (2, 2048)
    assert diff <= TOLERANCE, f"{case}: max abs difference {diff:.3g}"


@pytest.mark.parametrize("fmt", ["bot", "fastreid"])
def test_stem_switch_matters(fmt: str) -> None:
    """Without the stem switch (havana's default torchvision stem) the features differ: the switch is needed."""
    checkpoint = F.bot_checkpoint() if fmt == "bot" else F.fastreid_checkpoint()
    reference = F.bot_reference if fmt == "bot" else F.fastreid_reference
    model = havana_extractor(convert_checkpoint(checkpoint, fmt, "resnet50"), "resnet50", None)
    images = F.images_uint8()
    diff = (havana_feature(model, images) - reference(checkpoint, "resnet50", images)).abs().max().item()
    MEASURED[f"{fmt} with torchvision stem"] = diff
    assert diff > 1e-2


def test_resnet18_bot(tmp_path: Path) -> None:
    checkpoint = F.bot_checkpoint("resnet18", num_classes=5)
    model = havana_extractor(convert_checkpoint(checkpoint, "bot", "resnet18"), "resnet18", "bot")
    images = F.images_uint8()
    diff = (havana_feature(model, images) - F.bot_reference(checkpoint, "resnet18", images)).abs().max().item()
    MEASURED["bot resnet18"] = diff
    assert diff <= TOLERANCE


def test_key_count_and_order() -> None:
    from havana.models.extractor import BoTExtractor

    """324 tensors for ResNet-50 (318 backbone, 5 BNNeck, classifier), in havana's state-dict order."""
    state = convert_checkpoint(F.bot_checkpoint(num_classes=751), "bot", "resnet50")
    assert len(state) == 324
    with torch.device("meta"):
        model = BoTExtractor("resnet50", num_classes=751)
    assert list(state) == list(model.state_dict())
    parameters = {name for name, _ in model.named_parameters()}
    assert sum(v.numel() for k, v in state.items() if k in parameters) == 25_050_176  # 751 ids, as measured on BoT


# ---- refusals: one sentence each, naming what was expected -------------------------------------------------------


def refusal(obj, fmt: str = "bot", arch: str = "resnet50") -> str:
    with pytest.raises(HavanaError) as info:
        convert_checkpoint(obj, fmt, arch)
    message = str(info.value)
    assert one_sentence(message), message
    return message


def test_refuses_pickled_module_file(tmp_path: Path) -> None:
    path = tmp_path / "resnet50_model_120.pth"
    torch.save(nn.Sequential(nn.Linear(2, 2)), path)  # BoT's ignite ModelCheckpoint pickles the whole Baseline
    with pytest.raises(HavanaError) as info:
        load_checkpoint_file(str(path))
    message = str(info.value)
    assert one_sentence(message) and "torch.nn.modules.container.Sequential" in message
    assert "state_dict()" in message


def test_refuses_module_object() -> None:
    assert "whole pickled Linear module" in refusal(nn.Linear(2, 2))


def test_refuses_optimizer_file() -> None:
    assert "optimizer state" in refusal({"state": {}, "param_groups": []})


def test_refuses_unknown_key() -> None:
    checkpoint = F.bot_checkpoint()
    checkpoint["base.layer4.0.extra.weight"] = torch.zeros(1)
    assert "`base.layer4.0.extra.weight`" in refusal(checkpoint)


def test_refuses_fastreid_non_local() -> None:
    checkpoint = F.fastreid_checkpoint()
    checkpoint["model"]["backbone.NL_2.0.g.weight"] = torch.zeros(1)
    assert "non-local blocks" in refusal(checkpoint, "fastreid")


def test_refuses_torchreid_fc512() -> None:
    checkpoint = F.torchreid_checkpoint()
    checkpoint["state_dict"]["fc.0.weight"] = torch.zeros(512, 2048)
    assert "resnet50_fc512" in refusal(checkpoint, "torchreid")


def test_refuses_missing_key() -> None:
    checkpoint = F.bot_checkpoint()
    del checkpoint["base.layer3.2.bn2.running_var"], checkpoint["bottleneck.running_mean"]
    message = refusal(checkpoint)
    assert "`base.layer3.2.bn2.running_var`" in message and "`bottleneck.running_mean`" in message


def test_refuses_missing_bnneck() -> None:
    checkpoint = F.bot_checkpoint()
    for key in [k for k in checkpoint if k.startswith("bottleneck.")]:
        del checkpoint[key]
    assert "`bottleneck.weight`" in refusal(checkpoint)  # no classifier bias, so not MODEL.NECK 'no'


def test_refuses_wrong_classifier_width() -> None:
    checkpoint = F.fastreid_checkpoint()
    checkpoint["model"]["heads.weight"] = torch.zeros(751, 1024)
    message = refusal(checkpoint, "fastreid")
    assert "`heads.weight` (751, 1024) (expected (num_ids, 2048))" in message


def test_refuses_wrong_backbone_width() -> None:
    checkpoint = F.torchreid_checkpoint()
    checkpoint["state_dict"]["layer2.0.conv1.weight"] = torch.zeros(64, 256, 1, 1)
    assert "`layer2.0.conv1.weight` (64, 256, 1, 1) (expected (128, 256, 1, 1))" in refusal(checkpoint, "torchreid")


def test_refuses_other_depth_with_hint() -> None:
    message = refusal(F.bot_checkpoint("resnet18"), "bot", "resnet50")
    assert "pass --arch resnet18" in message


def test_refuses_foreign_normalisation() -> None:
    checkpoint = F.fastreid_checkpoint(version="v1.0")
    checkpoint["model"]["pixel_mean"] = torch.full((1, 3, 1, 1), 127.5)
    assert "pixel_mean" in refusal(checkpoint, "fastreid")


def test_refuses_wrong_container() -> None:
    assert "pass --format torchreid" in refusal(F.torchreid_checkpoint(), "bot")
    assert "pass --format fastreid" in refusal(F.fastreid_checkpoint(), "torchreid")
    assert "pass --format bot" in refusal(F.bot_checkpoint(), "torchreid")


def test_refuses_missing_or_damaged_file(tmp_path: Path) -> None:
    with pytest.raises(HavanaError, match="does not exist"):
        load_checkpoint_file(str(tmp_path / "none.pth"))
    (tmp_path / "bad.pth").write_bytes(b"not a torch file")
    with pytest.raises(HavanaError, match="truncated or not a torch file"):
        load_checkpoint_file(str(tmp_path / "bad.pth"))


def test_torchreid_numpy_scalars_numpy1_and_2(tmp_path: Path) -> None:
    """torchreid stores `rank1` as a numpy float; files written under numpy 1 name `numpy.core.multiarray.scalar`,
    under numpy 2 `numpy._core.multiarray.scalar`. Both load with weights_only=True."""
    import zipfile

    torch.save(F.torchreid_checkpoint("resnet18", num_classes=3), tmp_path / "np2.pth")
    with zipfile.ZipFile(tmp_path / "np2.pth") as source, zipfile.ZipFile(tmp_path / "np1.pth", "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(name, data)
    for name in ("np2.pth", "np1.pth"):
        assert float(load_checkpoint_file(str(tmp_path / name))["rank1"]) == 0.875


def test_any_classifier_width() -> None:
    for width in (1, 13, 4101):
        state = convert_checkpoint(F.bot_checkpoint("resnet18", num_classes=width), "bot", "resnet18")
        assert state["classifier.weight"].shape == (width, 512)


def test_half_precision_export_becomes_float32() -> None:
    checkpoint = {k: v.half() if v.is_floating_point() else v for k, v in F.bot_checkpoint("resnet18").items()}
    state = convert_checkpoint(checkpoint, "bot", "resnet18")
    assert {v.dtype for k, v in state.items() if not k.endswith("num_batches_tracked")} == {torch.float32}


def test_fastreid_difference_is_input_rounding_only() -> None:
    """fast-reid normalises 0-255 pixels by mean·255 and std·255, havana divides by 255 first: one float32 ulp
    apart. Fed the same normalised tensor, the two forwards agree exactly, so the fastreid case's ~3e-6 is that."""
    checkpoint = F.fastreid_checkpoint()
    model = havana_extractor(convert_checkpoint(checkpoint, "fastreid", "resnet50"), "resnet50", "fastreid")
    x = F.to_tensor_normalize(F.images_uint8())
    with torch.no_grad():
        got = model(x)
    want = F.fastreid_reference(checkpoint, "resnet50", x, normalised=True)
    MEASURED["fastreid, same normalised input"] = (got - want).abs().max().item()
    assert torch.equal(got, want)


def test_zz_report() -> None:
    print("\nmax abs differences:", {k: f"{v:.3g}" for k, v in MEASURED.items()})

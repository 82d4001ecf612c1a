"""`havana import-extractor`, `import-features`, `export-extractor`, `export-features` through the CLI: a BoT
checkpoint becomes a model.pt with BoT's test feature, exports read back to equal models and features, and each bad
checkpoint or feature file is one sentence and exit status 2."""

from __future__ import annotations

import numpy as np
import pytest
import reid_checkpoints as F
import torch
from test_feature_import import arrays, manifest

from havana.cli import main
from havana.data.features import read_features
from havana.data.transforms import normalize_batch
from havana.models.extractor import build_extractor, load_extractor, save_extractor
from havana.models.extractor_config import ExtractorConfig, TransformConfig

torch.set_num_threads(1)


def error_line(capsys, command: str) -> str:
    """The CLI's error output, checked to be one line starting with the command's prefix."""
    err = capsys.readouterr().err
    assert err.startswith(f"havana {command}: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_bot_checkpoint_imports_to_bots_test_feature_with_provenance(tmp_path, capsys):
    checkpoint = F.bot_checkpoint("resnet18", num_classes=7)
    torch.save(checkpoint, tmp_path / "bot.pth")
    out = tmp_path / "model" / "model.pt"
    argv = ["import-extractor", "--format", "bot", "--checkpoint", str(tmp_path / "bot.pth"), "--arch", "resnet18"]
    assert main([*argv, "--out", str(out), "--image-size", "64", "32"]) == 0
    assert "stem ReLU False" in capsys.readouterr().out
    model, config = load_extractor(out)
    assert (config.stem_relu, config.transforms.interpolation, tuple(config.image_size)) == (
        False,
        "bilinear",
        (64, 32),
    )
    images = F.images_uint8()
    with torch.no_grad():
        got = model(normalize_batch(images, TransformConfig()))
    assert (got - F.bot_reference(checkpoint, "resnet18", images)).abs().max().item() <= 1e-5
    provenance = (out.parent / "model.pt.provenance.yaml").read_text()
    assert "format: bot" in provenance and "sha256:" in provenance


def test_export_to_bots_layout_imports_back_to_the_same_model(tmp_path):
    torch.manual_seed(0)
    config = ExtractorConfig(arch="resnet18", pretrained=False, stem_relu=False, image_size=(64, 32))
    model = build_extractor(config, 5).eval()
    save_extractor(tmp_path / "model.pt", model, config, 5)
    assert (
        main(
            [
                "export-extractor",
                "--model",
                str(tmp_path / "model.pt"),
                "--format",
                "bot",
                "--out",
                str(tmp_path / "bot.pth"),
            ]
        )
        == 0
    )
    exported = torch.load(tmp_path / "bot.pth", weights_only=True)
    assert "base.conv1.weight" in exported and "bottleneck.running_var" in exported and len(exported) == 126
    argv = ["import-extractor", "--format", "bot", "--checkpoint", str(tmp_path / "bot.pth"), "--arch", "resnet18"]
    assert main([*argv, "--out", str(tmp_path / "back.pt"), "--image-size", "64", "32"]) == 0
    back, _ = load_extractor(tmp_path / "back.pt")
    for (key, value), (other, again) in zip(model.state_dict().items(), back.state_dict().items()):
        assert key == other and torch.equal(value, again), key


def test_a_model_not_built_as_bots_is_not_exported_in_its_layout(tmp_path, capsys):
    config = ExtractorConfig(arch="resnet18", pretrained=False)  # torchvision's stem ReLU
    save_extractor(tmp_path / "model.pt", build_extractor(config, 3), config, 3)
    assert (
        main(
            [
                "export-extractor",
                "--model",
                str(tmp_path / "model.pt"),
                "--format",
                "bot",
                "--out",
                str(tmp_path / "b.pth"),
            ]
        )
        == 2
    )
    assert "not BoT's ResNet" in error_line(capsys, "export-extractor")


def test_exported_features_import_back_equal(tmp_path, capsys):
    data = arrays()
    np.savez(tmp_path / "src.npz", **data)
    csv = manifest(tmp_path / "manifest.csv", data)
    first = tmp_path / "first.h5"
    assert (
        main(["import-features", "--source", str(tmp_path / "src.npz"), "--out", str(first), "--manifest", str(csv)])
        == 0
    )
    assert main(["export-features", "--features", str(first), "--out", str(tmp_path / "again.npz")]) == 0
    second = tmp_path / "second.h5"
    assert (
        main(["import-features", "--source", str(tmp_path / "again.npz"), "--out", str(second), "--manifest", str(csv)])
        == 0
    )
    a, b = read_features(first), read_features(second)
    for split in ("train", "query", "gallery"):
        np.testing.assert_array_equal(a[split].features, b[split].features)
        assert a[split].paths == b[split].paths and np.array_equal(a[split].pids, b[split].pids)
    assert "see no augmentation" not in capsys.readouterr().out  # 3 train views


def test_one_train_view_says_the_head_sees_no_augmentation(tmp_path, capsys):
    data = arrays()
    data["train_features"] = data["train_features"][:, 0]  # [N, D]: one view
    np.savez(tmp_path / "src.npz", **data)
    assert main(["import-features", "--source", str(tmp_path / "src.npz"), "--out", str(tmp_path / "f.h5")]) == 0
    assert "1 train view(s)" in (out := capsys.readouterr().out) and "sees no augmentation" in out


def _bad_checkpoint(tmp_path, case: str) -> list[str]:
    path = tmp_path / "source.pth"
    if case == "wrong format":
        torch.save(F.torchreid_checkpoint("resnet18", num_classes=3), path)
        return ["--format", "bot", "--checkpoint", str(path), "--arch", "resnet18"]
    if case == "wrong width":
        torch.save(F.bot_checkpoint("resnet18", num_classes=3), path)
        return ["--format", "bot", "--checkpoint", str(path), "--arch", "resnet50"]
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), path)  # "pickled module": BoT's ignite files
    return ["--format", "bot", "--checkpoint", str(path), "--arch", "resnet18"]


@pytest.mark.parametrize(
    "case, says",
    [
        ("wrong format", "pass --format torchreid"),
        ("wrong width", "pass --arch resnet18"),
        ("pickled module", "torch.save(model.state_dict(), FILE)"),
    ],
)
def test_a_bad_checkpoint_is_one_sentence_and_exit_2(tmp_path, capsys, case, says):
    argv = _bad_checkpoint(tmp_path, case)
    assert main(["import-extractor", *argv, "--out", str(tmp_path / "model.pt")]) == 2
    assert says in error_line(capsys, "import-extractor")
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize(
    "case, says",
    [
        ("wrong format", "is neither .h5/.hdf5"),
        ("wrong width", "feature widths differ between splits"),
        ("missing ids", "lacks 1 identities the manifest lists"),
        ("nans", "NaN or infinite values"),
    ],
)
def test_a_bad_feature_file_is_one_sentence_and_exit_2(tmp_path, capsys, case, says):
    data, source = arrays(), tmp_path / "source.npz"
    csv = manifest(tmp_path / "manifest.csv", data)
    if case == "wrong width":
        data["query_features"] = data["query_features"][:, :4]
    elif case == "missing ids":
        data["gallery_pids"] = np.array([0, 1, 0, 1, 0])
    elif case == "nans":
        data["train_features"][1, 0, 0] = np.nan
    np.savez(source, **data)
    if case == "wrong format":
        source = source.rename(tmp_path / "source.pkl")
    out = tmp_path / "features.h5"
    assert main(["import-features", "--source", str(source), "--out", str(out), "--manifest", str(csv)]) == 2
    assert says in error_line(capsys, "import-features")
    assert not out.exists()


def test_import_and_features_entries_are_checked():
    from havana.errors import HavanaError
    from havana.models.extractor_config import extractor_config

    def entry(**fields):
        return extractor_config({"extractors": {"x": fields}}, "x")

    source = {"format": "bot", "checkpoint": "a.pth"}
    assert entry(arch="resnet18", **{"import": source}).import_.format == "bot"
    assert entry(features="f.npz").features == "f.npz"
    with pytest.raises(HavanaError, match="fixes stem_relu; remove it"):
        entry(arch="resnet18", stem_relu=False, **{"import": source})  # differs from the default: set by the user
    # the default value itself is what Snakemake's schema validation writes into every entry: not a user's setting
    assert entry(arch="resnet18", stem_relu=True, pretrained=True, features=None, **{"import": source}).import_
    with pytest.raises(HavanaError, match="unknown import.format 'caffe'; valid: bot, fastreid, torchreid"):
        entry(**{"import": {"format": "caffe", "checkpoint": "a.pth"}})
    with pytest.raises(HavanaError, match="needs no model; remove its model_from or import"):
        entry(features="f.npz", model_from="y")

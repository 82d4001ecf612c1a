"""`havana train-extractor` + `havana extract` on a tiny fabricated image folder: schema, oracles, reproducibility."""

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms as T
import yaml
from image_folder import make_image_folder
from PIL import Image

from havana.cli import main
from havana.data.features import read_features
from havana.models.extractor import load_extractor

torch.set_num_threads(2)
CONFIG = {
    "extractors": {
        "tiny": {
            "arch": "resnet18",
            "pretrained": False,
            "image_size": [32, 16],
            "transforms": {"padding": 2},
            "train": {"epochs": 1, "p": 3, "k": 2, "num_workers": 0, "device": "cpu"},
            "extraction": {"views": 2, "batch_size": 4, "num_workers": 0, "device": "cpu", "seed": 1},
        }
    }
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    manifest = make_image_folder(root / "synthetic")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    assert (
        main(
            [
                "train-extractor",
                "--manifest",
                str(manifest),
                "--config",
                str(config),
                "--extractor",
                "tiny",
                "--out",
                str(root / "ext"),
                "--seed",
                "0",
            ]
        )
        == 0
    )
    return root, manifest, config, root / "ext" / "model.pt"


def test_extract_writes_the_schema_with_views_and_flips(trained, capsys):
    root, manifest, config, model_path = trained
    out = root / "features" / "tiny.h5"
    assert (
        main(
            [
                "extract",
                "--manifest",
                str(manifest),
                "--model",
                str(model_path),
                "--out",
                str(out),
                "--config",
                str(config),
                "--extractor",
                "tiny",
                "--views",
                "3",
            ]
        )
        == 0
    )
    assert "train 18, query 3, gallery 6" in capsys.readouterr().out
    features = read_features(out)
    assert features.attrs["dataset"] == "synthetic" and features.attrs["extractor"] == "tiny"
    assert features.attrs["views"] == 3 and features.attrs["image_size"] == [32, 16]
    assert features.attrs["complete"] == 1 and len(features.attrs["checkpoint_sha256"]) == 64
    rows = pd.read_csv(manifest)
    for split, views in (("train", 3), ("query", 2), ("gallery", 2)):
        part = rows[rows["split"] == split]
        got = features[split]
        assert got.features.shape == (len(part), views, 512) and got.features.dtype == np.float32
        assert got.paths == part["path"].tolist()
        np.testing.assert_array_equal(got.pids, part["pid"].to_numpy())
        np.testing.assert_array_equal(got.camids, part["camid"].to_numpy())
    # oracle: the model run by hand on one image through torchvision's per-image PIL transforms, plain and
    # mirrored; train view 0 is the plain image too
    model, ext_config = load_extractor(model_path)
    plain = T.Compose(
        [
            T.Resize(tuple(ext_config.image_size)),  # bilinear, as BoT's test transform
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )

    def by_hand(relative):
        with Image.open(manifest.parent / relative) as image:
            return plain(image.convert("RGB")).unsqueeze(0)

    with torch.no_grad():
        query = by_hand(features["query"].paths[1])
        expected = torch.cat([model(query), model(query.flip(-1))]).numpy()
        train0 = model(by_hand(features["train"].paths[4])).numpy()
    np.testing.assert_allclose(features["query"].features[1], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features["train"].features[4, 0], train0[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(features["train"].features[4, 1], features["train"].features[4, 2])
    assert (out.parent / "tiny.h5.provenance.yaml").is_file()


def test_extraction_is_reproducible_and_batch_size_free(trained):
    root, manifest, _config, model_path = trained
    a, b = root / "a.h5", root / "b.h5"
    assert main(["extract", "--manifest", str(manifest), "--model", str(model_path), "--out", str(a)]) == 0
    assert (
        main(["extract", "--manifest", str(manifest), "--model", str(model_path), "--out", str(b), "--batch-size", "7"])
        == 0
    )
    fa, fb = read_features(a), read_features(b)
    assert fa.attrs["views"] == 2  # the extraction settings saved with the model
    for split in ("train", "query", "gallery"):
        np.testing.assert_allclose(fa[split].features, fb[split].features, rtol=1e-5, atol=1e-6)


def test_missing_model_is_one_sentence_and_leaves_no_file(trained, capsys):
    root, manifest, _config, _model = trained
    out = root / "missing" / "x.h5"
    assert main(["extract", "--manifest", str(manifest), "--model", str(root / "nope.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert not out.exists() and not list(out.parent.glob(".x.h5.*"))


def test_missing_image_aborts_with_one_sentence_and_without_a_partial_file(trained, capsys):
    root, manifest, _config, model_path = trained
    broken = root / "broken"
    broken_manifest = make_image_folder(broken)
    missing = pd.read_csv(broken_manifest)["path"].iloc[-1]  # last gallery image
    (broken / missing).unlink()
    out = root / "broken.h5"
    assert main(["extract", "--manifest", str(broken_manifest), "--model", str(model_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == (
        f"havana extract: error: image {broken / missing} listed in the manifest does not "
        "exist; rerun `havana prepare`."
    )  # one sentence after the progress lines
    assert "Traceback" not in err and all(line.startswith("20") for line in err.splitlines()[:-1])
    assert not out.exists() and not list(root.glob(".broken.h5.*"))


def test_config_without_extractor_is_refused(trained, capsys):
    root, manifest, config, model_path = trained
    assert (
        main(
            [
                "extract",
                "--manifest",
                str(manifest),
                "--model",
                str(model_path),
                "--out",
                str(root / "c.h5"),
                "--config",
                str(config),
            ]
        )
        == 2
    )
    assert "--extractor" in capsys.readouterr().err


def test_views_without_random_erasing_from_the_same_model(trained, tmp_path):
    """Table 6: an entry with model_from extracts with the other entry's model; extraction.random_erasing switches
    the training views' erasing off while the model (and so view 0, query and gallery) stays the same."""
    root, manifest, _config, model_path = trained
    entry = CONFIG["extractors"]["tiny"]["extraction"]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "extractors": {
                    **CONFIG["extractors"],
                    "tiny_re": {"model_from": "tiny", "extraction": {**entry, "views": 4, "random_erasing": True}},
                    "tiny_nore": {"model_from": "tiny", "extraction": {**entry, "views": 4, "random_erasing": False}},
                }
            }
        )
    )
    files = {}
    for name in ("tiny_re", "tiny_nore"):
        files[name] = tmp_path / f"{name}.h5"
        assert (
            main(
                [
                    "extract",
                    "--manifest",
                    str(manifest),
                    "--model",
                    str(model_path),
                    "--out",
                    str(files[name]),
                    "--config",
                    str(config),
                    "--extractor",
                    name,
                ]
            )
            == 0
        )
    re_on, re_off = read_features(files["tiny_re"]), read_features(files["tiny_nore"])
    assert (
        re_off.attrs["extractor"] == "tiny_nore"
        and re_off.attrs["checkpoint_sha256"] == re_on.attrs["checkpoint_sha256"]
    )
    for split in ("query", "gallery"):
        np.testing.assert_array_equal(re_on[split].features, re_off[split].features)
    np.testing.assert_array_equal(re_on["train"].features[:, 0], re_off["train"].features[:, 0])
    assert not np.allclose(re_on["train"].features[:, 1:], re_off["train"].features[:, 1:])

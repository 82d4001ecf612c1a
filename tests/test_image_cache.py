"""The decoded-image cache: the plain resize of every row in order, reused only while its record names what it was
decoded from, decoded again otherwise."""

import pandas as pd
import pytest
import torch
import yaml
from image_folder import make_image_folder

import havana.data.image_cache as image_cache
from havana.data.datasets import read_manifest
from havana.data.image_cache import cache_settings, decode_images, load_or_decode, remove_image_cache
from havana.data.images import ManifestImages
from havana.data.transforms import plain_transform
from havana.errors import HavanaError

SIZE = (24, 12)


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    manifest = make_image_folder(tmp_path_factory.mktemp("images"), train_ids=3, per_id=3)
    rows = read_manifest(manifest)
    return manifest, rows[rows["split"] == "train"].reset_index(drop=True)


def _settings(rows, sha="abc", interpolation="bilinear"):
    return cache_settings(sha, "train", len(rows), SIZE, interpolation)


@pytest.mark.parametrize("threads", [1, 2])
def test_decoded_rows_are_the_plain_views_in_row_order(train, threads):
    # oracle: the dataset extraction reads, one image at a time
    manifest, rows = train
    images = decode_images(manifest.parent, rows, SIZE, "bicubic", threads)
    plain = ManifestImages(manifest.parent, rows, plain_transform(SIZE, "bicubic"))
    assert images.shape == (len(rows), 3, *SIZE) and images.dtype == torch.uint8
    for i in range(len(rows)):
        torch.testing.assert_close(images[i], plain[i][0], rtol=0, atol=0)


def test_the_cache_is_written_with_its_record_and_reused(train, tmp_path, monkeypatch):
    manifest, rows = train
    path = tmp_path / "train_images.pt"
    first = load_or_decode(path, manifest.parent, rows, _settings(rows))
    record = yaml.safe_load(path.with_name(path.name + ".provenance.yaml").read_text())
    assert record["config"] == _settings(rows)  # the manifest's sha256, split, rows, size and interpolation
    monkeypatch.setattr(image_cache, "decode_images", lambda *a, **k: pytest.fail("decoded again"))
    torch.testing.assert_close(load_or_decode(path, manifest.parent, rows, _settings(rows)), first, rtol=0, atol=0)


@pytest.mark.parametrize(
    "stale",
    ["another manifest", "another interpolation", "no record", "damaged file", "wrong shape"],
)
def test_a_stale_or_damaged_cache_is_decoded_again(train, tmp_path, stale):
    manifest, rows = train
    path = tmp_path / "train_images.pt"
    load_or_decode(path, manifest.parent, rows, _settings(rows))
    settings = _settings(rows)
    if stale == "another manifest":
        settings = _settings(rows, sha="def")
    elif stale == "another interpolation":
        settings = _settings(rows, interpolation="bicubic")
    elif stale == "no record":
        path.with_name(path.name + ".provenance.yaml").unlink()
    elif stale == "damaged file":
        path.write_bytes(path.read_bytes()[:100])
    else:  # a record that says the right things over a tensor of another shape
        torch.save(torch.zeros(1, 3, *SIZE, dtype=torch.uint8), path)
    expected = decode_images(manifest.parent, rows, SIZE, settings["interpolation"])
    torch.testing.assert_close(load_or_decode(path, manifest.parent, rows, settings), expected, rtol=0, atol=0)
    record = yaml.safe_load(path.with_name(path.name + ".provenance.yaml").read_text())
    assert record["config"] == settings
    torch.testing.assert_close(torch.load(path, weights_only=True), expected, rtol=0, atol=0)


def test_remove_deletes_the_cache_and_its_record(train, tmp_path):
    manifest, rows = train
    path = tmp_path / "train_images.pt"
    load_or_decode(path, manifest.parent, rows, _settings(rows))
    remove_image_cache(path)
    assert list(tmp_path.iterdir()) == []
    remove_image_cache(path)  # nothing there: no error


def test_a_missing_image_or_no_rows_is_one_sentence(train, tmp_path):
    manifest, rows = train
    with pytest.raises(HavanaError, match="no images to decode"):
        decode_images(manifest.parent, rows.iloc[:0], SIZE, "bilinear")
    missing = pd.concat([rows, pd.DataFrame([{**rows.iloc[0].to_dict(), "path": "train/gone.jpg"}])])
    with pytest.raises(HavanaError, match="gone.jpg"):
        load_or_decode(tmp_path / "c.pt", manifest.parent, missing.reset_index(drop=True), _settings(missing))
    assert not (tmp_path / "c.pt").exists()

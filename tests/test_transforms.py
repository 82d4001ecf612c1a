"""Transforms and image datasets: each switch does what it says, and multi-view extraction is seeded per image."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from havana.data.images import ManifestImages, MultiViewImages, label_map, ordered_batches
from havana.data.transforms import IMAGENET_MEAN, normalize_batch, plain_transform, train_transform
from havana.errors import HavanaError
from havana.models.extractor_config import TransformConfig

SIZE = (32, 16)
OFF = TransformConfig(flip=False, pad_crop=False, normalize=False, random_erasing=False)
NORMALIZE_ONLY = TransformConfig(flip=False, pad_crop=False, normalize=True, random_erasing=False)


def _image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(40, 20, 3), dtype=np.uint8))


def _plain(image, config=OFF):
    """The un-augmented view as extraction computes it: uint8 from the loader, normalised per batch."""
    return normalize_batch(plain_transform(SIZE)(image), config)


def test_plain_view_is_uint8_and_normalising_maps_the_mean_colour_to_zero():
    mean_colour = tuple(round(255 * m) for m in IMAGENET_MEAN)
    view = plain_transform(SIZE)(Image.new("RGB", (20, 40), mean_colour))
    assert view.shape == (3, *SIZE) and view.dtype == torch.uint8
    out = normalize_batch(view, TransformConfig())
    assert out.dtype == torch.float32 and out.abs().max() < 0.01  # rounding to 8 bits only


@pytest.mark.parametrize("config", [OFF, NORMALIZE_ONLY], ids=["off", "normalize"])
def test_batch_normalisation_is_bit_identical_to_torchvision_per_image(config):
    # oracle: torchvision's own per-image ToTensor + Normalize (the train path with no random switch on)
    images = [_image(seed) for seed in range(3)]
    batch = normalize_batch(torch.stack([plain_transform(SIZE)(image) for image in images]), config)
    expected = torch.stack([train_transform(SIZE, config)(image) for image in images])
    torch.testing.assert_close(batch, expected, rtol=0, atol=0)


def test_flip_gives_the_plain_or_the_mirrored_image_and_both_occur():
    image, plain = _image(), _plain(_image())
    flip = train_transform(SIZE, TransformConfig(flip=True, pad_crop=False, normalize=False, random_erasing=False))
    flipped = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out = flip(image)
        if torch.equal(out, plain.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(out, plain)
    assert 0 < flipped < 20


def test_pad_crop_is_a_shifted_window_of_the_padded_image():
    image = _image()
    plain = _plain(image)
    padded = torch.nn.functional.pad(plain, (10, 10, 10, 10))
    crop = train_transform(SIZE, TransformConfig(flip=False, pad_crop=True, normalize=False, random_erasing=False))
    torch.manual_seed(4)
    out = crop(image)
    windows = [padded[:, y : y + SIZE[0], x : x + SIZE[1]] for y in range(21) for x in range(21)]
    assert out.shape == (3, *SIZE) and any(torch.equal(out, w) for w in windows)


def test_random_erasing_zeroes_one_rectangle_within_the_area_range():
    erase = train_transform(
        SIZE, TransformConfig(flip=False, pad_crop=False, normalize=True, random_erasing=True, erasing_p=1.0)
    )
    image = Image.new("RGB", (16, 32), (255, 255, 255))  # normalised white is never 0
    for seed in range(10):
        torch.manual_seed(seed)
        zero = (erase(image) == 0).all(dim=0)
        rows, cols = zero.any(dim=1).nonzero(), zero.any(dim=0).nonzero()
        area = int(zero.sum())
        if area == 0:
            continue  # torchvision gives up after 10 tries that do not fit
        assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a full rectangle
        assert 0.02 * 32 * 16 * 0.5 <= area <= 0.4 * 32 * 16 * 1.5  # area range, loosened for integer rounding


@pytest.fixture
def folder(tmp_path):
    rows = []
    for i in range(4):
        name = f"img{i}.jpg"
        _image(i).save(tmp_path / name)
        rows.append({"path": name, "pid": 10 + i % 2, "camid": i % 3, "split": "train"})
    return tmp_path, pd.DataFrame(rows)


def test_manifest_images_yield_labels_cameras_and_indices(folder):
    root, rows = folder
    data = ManifestImages(root, rows, plain_transform(SIZE), labels=label_map(rows["pid"]))
    image, label, camid, index = data[3]
    assert image.shape == (3, *SIZE) and image.dtype == torch.uint8 and (label, camid, index) == (1, 0, 3)
    assert label_map([7, 3, 7, 9]) == {3: 0, 7: 1, 9: 2}


def test_multiview_view0_is_plain_and_views_are_seeded_per_image(folder):
    root, rows = folder
    plain, augment = plain_transform(SIZE), train_transform(SIZE, TransformConfig())
    a = MultiViewImages(root, rows, plain, augment, views=3, seed=5)
    b = MultiViewImages(root, rows, plain, augment, views=3, seed=5)
    first = [a[i][:2] for i in range(4)]
    torch.manual_seed(123)  # global RNG state and access order must not matter
    second = [b[i][:2] for i in reversed(range(4))][::-1]
    for (x0, x), (y0, y), i in zip(first, second, range(4)):
        assert x0.shape == (3, *SIZE) and x.shape == (2, 3, *SIZE)
        torch.testing.assert_close(x, y, rtol=0, atol=0)
        torch.testing.assert_close(x0, y0, rtol=0, atol=0)
        torch.testing.assert_close(x0, ManifestImages(root, rows, plain)[i][0], rtol=0, atol=0)
    assert not torch.equal(first[0][1][0], first[0][1][1])
    other_seed = MultiViewImages(root, rows, plain, augment, views=3, seed=6)[0][1]
    assert not torch.equal(other_seed, first[0][1])
    assert MultiViewImages(root, rows, plain, augment, views=1)[0][1].shape == (0, 3, *SIZE)


def test_missing_image_is_a_clear_error(folder):
    root, rows = folder
    (root / "img2.jpg").unlink()
    with pytest.raises(HavanaError, match="img2.jpg"):
        ManifestImages(root, rows, plain_transform(SIZE))[2]


@pytest.mark.parametrize("workers, threads", [(0, 1), (0, 2), (1, 1)])
def test_ordered_batches_match_a_plain_dataloader(folder, workers, threads):
    root, rows = folder
    data = ManifestImages(root, rows, plain_transform(SIZE))
    expected = list(torch.utils.data.DataLoader(data, batch_size=3))  # oracle: torch's own in-order loader
    got = list(ordered_batches(data, 3, workers=workers, threads=threads, read_ahead=2))
    assert len(got) == len(expected) == 2
    for batch, reference in zip(got, expected):
        for field, ref in zip(batch, reference):
            torch.testing.assert_close(field, ref, rtol=0, atol=0)


@pytest.mark.parametrize("workers, threads", [(0, 1), (0, 2), (1, 1)])
def test_missing_image_in_a_batch_is_the_same_one_sentence_in_any_process(folder, workers, threads):
    root, rows = folder
    (root / "img2.jpg").unlink()
    data = ManifestImages(root, rows, plain_transform(SIZE))
    with pytest.raises(HavanaError) as direct:
        data[2]
    with pytest.raises(HavanaError) as raised:
        list(ordered_batches(data, 2, workers=workers, threads=threads))
    assert str(raised.value) == str(direct.value)  # no "Caught HavanaError in DataLoader worker", no traceback

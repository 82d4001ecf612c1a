"""Transforms and image datasets: each switch does what it says, and multi-view extraction is seeded per image."""

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from havana.data.images import ManifestImages, MultiViewImages, label_map, ordered_batches
from havana.data.transforms import (
    IMAGENET_MEAN,
    erasing_rectangle,
    normalize_batch,
    plain_transform,
    train_transform,
)
from havana.errors import HavanaError
from havana.models.extractor_config import TransformConfig

SIZE = (32, 16)
BILINEAR = TransformConfig().interpolation  # the default: BoT's
OFF = TransformConfig(flip=False, pad_crop=False, normalize=False, random_erasing=False)
NORMALIZE_ONLY = TransformConfig(flip=False, pad_crop=False, normalize=True, random_erasing=False)


def _image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(40, 20, 3), dtype=np.uint8))


def _plain(image, config=OFF):
    """The un-augmented view as extraction computes it: uint8 from the loader, normalised per batch."""
    return normalize_batch(plain_transform(SIZE, BILINEAR)(image), config)


def test_plain_view_is_uint8_and_normalising_maps_the_mean_colour_to_zero():
    mean_colour = tuple(round(255 * m) for m in IMAGENET_MEAN)
    view = plain_transform(SIZE, BILINEAR)(Image.new("RGB", (20, 40), mean_colour))
    assert view.shape == (3, *SIZE) and view.dtype == torch.uint8
    out = normalize_batch(view, TransformConfig())
    assert out.dtype == torch.float32 and out.abs().max() < 0.01  # rounding to 8 bits only


@pytest.mark.parametrize("config", [OFF, NORMALIZE_ONLY], ids=["off", "normalize"])
def test_batch_normalisation_is_bit_identical_to_torchvision_per_image(config):
    # oracle: torchvision's own per-image ToTensor + Normalize (the train path with no random switch on)
    images = [_image(seed) for seed in range(3)]
    batch = normalize_batch(torch.stack([plain_transform(SIZE, BILINEAR)(image) for image in images]), config)
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


def test_resize_is_bilinear_by_default_as_bot_for_train_and_test_views():
    # oracle: torchvision's T.Resize default (bilinear), which BoT's build_transforms uses for train and test
    image = _image()
    reference = T.PILToTensor()(T.Resize(SIZE)(image))
    assert BILINEAR == "bilinear"
    torch.testing.assert_close(plain_transform(SIZE, BILINEAR)(image), reference, rtol=0, atol=0)
    torch.testing.assert_close(train_transform(SIZE, OFF)(image), reference.float() / 255, rtol=0, atol=0)
    bicubic = train_transform(SIZE, TransformConfig(**{**OFF.__dict__, "interpolation": "bicubic"}))(image)
    assert not torch.equal(bicubic, reference.float() / 255)


def test_pad_crop_is_a_shifted_window_of_the_padded_image_at_several_offsets():
    image = _image()
    plain = _plain(image)
    padded = torch.nn.functional.pad(plain, (10, 10, 10, 10))
    crop = train_transform(SIZE, TransformConfig(flip=False, pad_crop=True, normalize=False, random_erasing=False))
    windows = {(y, x): padded[:, y : y + SIZE[0], x : x + SIZE[1]] for y in range(21) for x in range(21)}
    offsets = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out = crop(image)
        assert out.shape == (3, *SIZE)
        offsets.add(next(offset for offset, window in windows.items() if torch.equal(out, window)))
    assert len(offsets) > 1 and offsets != {(10, 10)}  # a no-op (the plain image) is the single window (10, 10)


def _erased(out: torch.Tensor, fill=IMAGENET_MEAN) -> torch.Tensor:
    """The [H, W] mask of pixels holding `fill` in every channel."""
    return (out == torch.tensor(fill).view(-1, 1, 1)).all(dim=0)


def test_random_erasing_fills_one_rectangle_within_the_area_range_with_bots_values():
    erase = train_transform(
        SIZE, TransformConfig(flip=False, pad_crop=False, normalize=True, random_erasing=True, erasing_p=1.0)
    )
    image = Image.new("RGB", (16, 32), (255, 255, 255))  # normalised white is never one of the fill values
    for seed in range(10):
        torch.manual_seed(seed)
        out = erase(image)
        erased = _erased(out)
        rows, cols = erased.any(dim=1).nonzero(), erased.any(dim=0).nonzero()
        area = int(erased.sum())
        assert area > 0  # p = 1 and 100 tries: BoT's eraser always finds a rectangle at 32×16
        assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a full rectangle
        assert 0.02 * 32 * 16 * 0.5 <= area <= 0.4 * 32 * 16 * 1.5  # area range, loosened for integer rounding
        # everything else is the normalised white image, untouched
        white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor((0.229, 0.224, 0.225))
        assert torch.allclose(out[:, ~erased], white.view(-1, 1).expand(3, int((~erased).sum())))


def test_zero_fill_writes_the_mean_pixel():
    config = TransformConfig(flip=False, pad_crop=False, random_erasing=True, erasing_p=1.0, erasing_fill="zero")
    torch.manual_seed(0)
    assert _erased(train_transform(SIZE, config)(Image.new("RGB", (16, 32), (255, 255, 255))), (0, 0, 0)).any()


def test_bot_erasing_draws_the_aspect_ratio_uniformly():
    # BoT: h/w uniform in [0.3, 1/0.3], so P(h/w > 1) = (1/0.3 - 1) / (1/0.3 - 0.3) = 0.769 (torchvision's
    # log-uniform draw gives 0.5); on a large canvas almost every first try fits, so the fitted aspects keep the law
    torch.manual_seed(0)
    boxes = [erasing_rectangle(4000, 4000, (0.02, 0.4), (0.3, 1 / 0.3)) for _ in range(4000)]
    aspects = np.array([h / w for _, _, h, w in boxes])
    assert 0.3 * 0.98 <= aspects.min() and aspects.max() <= 1.02 / 0.3
    for q in (0.5, 1.0, 2.0, 3.0):  # the empirical CDF against the uniform law (4000 draws: std 0.008)
        assert np.mean(aspects <= q) == pytest.approx((q - 0.3) / (1 / 0.3 - 0.3), abs=0.03), q
    areas = np.array([h * w for _, _, h, w in boxes]) / 4000**2
    assert np.mean(areas) == pytest.approx(0.21, abs=0.01)  # uniform in [0.02, 0.4]


def test_bot_erasing_gives_up_after_its_tries_when_nothing_fits():
    torch.manual_seed(0)
    assert erasing_rectangle(2, 2, (0.9, 1.0), (0.3, 1 / 0.3)) is None  # h and w must be below 2


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
    data = ManifestImages(root, rows, plain_transform(SIZE, BILINEAR), labels=label_map(rows["pid"]))
    image, label, camid, index = data[3]
    assert image.shape == (3, *SIZE) and image.dtype == torch.uint8 and (label, camid, index) == (1, 0, 3)
    assert label_map([7, 3, 7, 9]) == {3: 0, 7: 1, 9: 2}


def test_multiview_view0_is_plain_and_views_are_seeded_per_image(folder):
    root, rows = folder
    plain, augment = plain_transform(SIZE, BILINEAR), train_transform(SIZE, TransformConfig())
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
        ManifestImages(root, rows, plain_transform(SIZE, BILINEAR))[2]


@pytest.mark.parametrize("workers, threads", [(0, 1), (0, 2), (1, 1)])
def test_ordered_batches_match_a_plain_dataloader(folder, workers, threads):
    root, rows = folder
    data = ManifestImages(root, rows, plain_transform(SIZE, BILINEAR))
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
    data = ManifestImages(root, rows, plain_transform(SIZE, BILINEAR))
    with pytest.raises(HavanaError) as direct:
        data[2]
    with pytest.raises(HavanaError) as raised:
        list(ordered_batches(data, 2, workers=workers, threads=threads))
    assert str(raised.value) == str(direct.value)  # no "Caught HavanaError in DataLoader worker", no traceback

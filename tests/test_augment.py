"""Batched augmentation: with its draws pinned it is today's per-image pipeline pixel for pixel, and its draws have the
distributions of the per-image transforms' (compared sample against sample)."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from havana.data.augment import AugmentationDraws, apply_augmentation, augment_batch, draw_augmentation
from havana.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BoTRandomErasing,
    erasing_rectangle,
    normalize_batch,
    plain_transform,
)
from havana.errors import HavanaError
from havana.models.extractor_config import TransformConfig

SIZE = (32, 16)
CANVAS = (256, 128)  # the paper's size: there BoT's eraser rejects many tries (w < 128 fails), so the first-fit matters


def _images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, size=(40, 20, 3), dtype=np.uint8)) for _ in range(count)]


def _per_image(image: Image.Image, config: TransformConfig, flip: bool, top: int, left: int, box) -> torch.Tensor:
    """Oracle: today's per-image steps (`train_transform`'s torchvision ops in its order) with the random choices
    pinned: resize, hflip, T.Pad, crop at (top, left), ToTensor, Normalize, erase `box` with the configured fill."""
    image = T.Resize(SIZE)(image)
    if flip:
        image = TF.hflip(image)
    if config.pad_crop:
        image = TF.crop(T.Pad(config.padding)(image), top, left, *SIZE)
    out = T.ToTensor()(image)
    if config.normalize:
        out = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(out)
    if box is not None:
        fill = IMAGENET_MEAN if config.erasing_fill == "bot" else (0.0, 0.0, 0.0)
        out = TF.erase(out, *box, torch.tensor(fill).view(-1, 1, 1))
    return out


def _draws(flip, top, left, boxes) -> AugmentationDraws:
    long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    erase = [box is not None for box in boxes]
    boxes = [box or (0, 0, 0, 0) for box in boxes]
    return AugmentationDraws(
        torch.tensor(flip), long(top), long(left), torch.tensor(erase), *(long(part) for part in zip(*boxes))
    )


@pytest.mark.parametrize(
    "config",
    [
        TransformConfig(padding=3),
        TransformConfig(padding=3, erasing_fill="zero"),
        TransformConfig(padding=0, normalize=False),
        TransformConfig(pad_crop=False, random_erasing=False),
    ],
    ids=["bot", "zero-fill", "pad0-unnormalised", "no-crop-no-erasing"],
)
def test_pinned_draws_give_the_per_image_pipeline_pixel_for_pixel(config):
    images = _images(4)
    pad = config.padding if config.pad_crop else 0
    flip, top, left = [True, False, True, False], [0, 2 * pad, pad, min(1, pad)], [2 * pad, 0, min(1, pad), pad]
    boxes = [(3, 2, 10, 5), None, (0, 0, 31, 15), (20, 9, 12, 7)] if config.random_erasing else [None] * 4
    batch = torch.stack([plain_transform(SIZE, "bilinear")(image) for image in images])
    got = apply_augmentation(batch, _draws(flip, top, left, boxes), config)
    for i, image in enumerate(images):
        expected = _per_image(image, config, flip[i], top[i], left[i], boxes[i])
        torch.testing.assert_close(got[i], expected, rtol=0, atol=0, msg=f"image {i}")


def test_every_switch_off_is_normalisation_alone():
    batch = torch.stack([plain_transform(SIZE, "bilinear")(image) for image in _images(3)])
    off = TransformConfig(flip=False, pad_crop=False, random_erasing=False)
    out = augment_batch(batch, off, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, normalize_batch(batch, off), rtol=0, atol=0)


def test_the_same_generator_state_gives_the_same_batch_and_another_a_different_one():
    batch = torch.stack([plain_transform(SIZE, "bilinear")(image) for image in _images(8)])
    config = TransformConfig(padding=3)
    first = augment_batch(batch, config, torch.Generator().manual_seed(5))
    torch.testing.assert_close(augment_batch(batch, config, torch.Generator().manual_seed(5)), first, rtol=0, atol=0)
    assert not torch.equal(augment_batch(batch, config, torch.Generator().manual_seed(6)), first)


def test_a_float_batch_is_refused_in_one_sentence():
    with pytest.raises(HavanaError, match="uint8 images"):
        augment_batch(torch.zeros(2, 3, *SIZE), TransformConfig(), torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_result_bit_for_bit():
    # the draws come from a CPU generator whatever the device, and gather, normalise and mask are exact operations
    batch = torch.randint(0, 256, (64, 3, *CANVAS), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    config = TransformConfig()
    cpu = augment_batch(batch, config, torch.Generator().manual_seed(1))
    cuda = augment_batch(batch.cuda(), config, torch.Generator().manual_seed(1))
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=0)


# ------------------------------------------------------------------ distributions against the per-image transforms
# Each test draws N from the batched draw and N from today's per-image draw (torch's global RNG) and compares them.
# Proportions: a binomial at N = 20,000 has standard deviation at most 0.0035, so the difference of two has at most
# 0.005; the tolerance 0.025 is 5 of those. Distributions: the two-sample Kolmogorov-Smirnov distance; at N = 3,000
# each, a sup-distance over 0.06 has probability 2·exp(-2·(0.06/sqrt(2/3000))²) = 4e-5 when the laws are equal.
# The seeds are fixed, so each test gives the same verdict every run.

N_RATE, N_LAW, KS_LIMIT, RATE_LIMIT = 20_000, 3_000, 0.06, 0.025


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov distance: the largest gap between the empirical CDFs."""
    points = np.concatenate([a, b])
    cdf = lambda sample: np.searchsorted(np.sort(sample), points, side="right") / len(sample)  # noqa: E731
    return float(np.abs(cdf(a) - cdf(b)).max())


def test_flip_rate_is_the_per_image_flips():
    batched = draw_augmentation(N_RATE, SIZE, TransformConfig(), torch.Generator().manual_seed(0)).flip
    flip = T.RandomHorizontalFlip(p=0.5)
    probe = torch.arange(2).view(1, 1, 2)  # flipped exactly when its first pixel becomes 1
    torch.manual_seed(0)
    per_image = np.array([int(flip(probe)[0, 0, 0]) for _ in range(N_RATE)])
    assert abs(batched.float().mean().item() - per_image.mean()) < RATE_LIMIT
    assert abs(batched.float().mean().item() - 0.5) < RATE_LIMIT


def test_crop_offsets_are_the_per_image_crops():
    config = TransformConfig(padding=3)
    draws = draw_augmentation(N_LAW, SIZE, config, torch.Generator().manual_seed(0))
    padded = torch.zeros(3, SIZE[0] + 6, SIZE[1] + 6)
    torch.manual_seed(0)
    per_image = np.array([T.RandomCrop.get_params(padded, SIZE)[:2] for _ in range(N_LAW)])  # RandomCrop's draw
    for name, batched, today in (("top", draws.top, per_image[:, 0]), ("left", draws.left, per_image[:, 1])):
        batched = batched.numpy()
        assert set(batched) == set(today) == set(range(7)), name
        assert _ks(batched, today) < KS_LIMIT, name
    assert abs(np.corrcoef(draws.top.numpy(), draws.left.numpy())[0, 1]) < 0.06  # drawn independently


def test_erasing_fires_at_the_per_image_rate():
    config = TransformConfig(erasing_p=0.3)
    batched = draw_augmentation(N_RATE, CANVAS, config, torch.Generator().manual_seed(0)).erase
    eraser = BoTRandomErasing(0.3, config.erasing_scale, (0.3, 1 / 0.3), IMAGENET_MEAN)
    probe = torch.full((3, *CANVAS), 5.0)  # never one of the fill values
    torch.manual_seed(0)
    per_image = np.array([bool((eraser(probe.clone()) != 5.0).any()) for _ in range(2_000)])
    assert abs(batched.float().mean().item() - 0.3) < RATE_LIMIT
    assert abs(per_image.mean() - 0.3) < 3.5 * np.sqrt(0.21 / 2_000)  # the oracle fires at p too (2,000: slower)


@pytest.mark.parametrize("draw", ["bot", "torchvision"])
def test_erased_rectangles_have_the_per_image_laws(draw):
    config = TransformConfig(erasing_p=1.0, erasing_draw=draw)
    d = draw_augmentation(N_LAW, CANVAS, config, torch.Generator().manual_seed(0))
    assert bool(d.erase.all())  # at 256×128 some of the tries always fit
    height, width = CANVAS
    batched = np.stack([t.numpy() for t in (d.box_top, d.box_left, d.box_height, d.box_width)], axis=1)
    torch.manual_seed(0)
    scale, ratio = config.erasing_scale, (0.3, 1 / 0.3)
    if draw == "bot":
        today = np.array([erasing_rectangle(height, width, scale, ratio) for _ in range(N_LAW)])
    else:
        canvas = torch.zeros(3, *CANVAS)
        today = np.array([T.RandomErasing.get_params(canvas, scale, ratio, [0.0])[:4] for _ in range(N_LAW)])
    for sample in (batched, today):
        top, left, h, w = sample.T
        assert (h < height).all() and (w < width).all() and (top + h <= height).all() and (left + w <= width).all()
    laws = {
        "area": lambda s: s[:, 2] * s[:, 3] / (height * width),
        "aspect": lambda s: s[:, 2] / s[:, 3],
        "top": lambda s: s[:, 0] / (height - s[:, 2] + 1),
        "left": lambda s: s[:, 1] / (width - s[:, 3] + 1),
    }
    for name, law in laws.items():
        assert _ks(law(batched), law(today)) < KS_LIMIT, name


def test_the_two_erasing_draws_are_told_apart():
    # the power behind the test above: BoT's uniform aspect and torchvision's log-uniform one differ by far more
    # than the KS limit at this sample size
    aspects = {}
    for draw in ("bot", "torchvision"):
        d = draw_augmentation(N_LAW, CANVAS, TransformConfig(erasing_draw=draw), torch.Generator().manual_seed(0))
        aspects[draw] = (d.box_height / d.box_width).numpy()
    assert _ks(aspects["bot"], aspects["torchvision"]) > 3 * KS_LIMIT


def test_no_fitting_try_erases_nothing():
    config = TransformConfig(erasing_p=1.0, erasing_scale=(0.9, 1.0))  # h and w must be below 2 on a 2×2 image
    assert not draw_augmentation(50, (2, 2), config, torch.Generator().manual_seed(0)).erase.any()

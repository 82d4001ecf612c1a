"""Image transforms for re-ID (BoT): resize, random flip, pad + random crop, normalise, random erasing, each switchable.

By default each step is BoT's (reid-strong-baseline `data/transforms/`): bilinear resize, and its own RandomErasing
(aspect h/w uniform in (r, 1/r), up to 100 tries, channels set to PIXEL_MEAN's values after normalisation).

Extraction ships the un-augmented view as uint8 (a quarter of the bytes through the DataLoader) and converts it to
float and normalises it once per batch on the model's device; `normalize_batch` does the same float operations as
`ToTensor` + `Normalize`, so both paths give bit-identical tensors.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms as T

from havana.models.extractor_config import TransformConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize(image_size: tuple[int, int], interpolation: str) -> T.Resize:
    """Resize to (height, width) with the named interpolation ("bilinear": BoT's T.Resize default; "bicubic")."""
    return T.Resize(tuple(image_size), interpolation=T.InterpolationMode(interpolation))


def plain_transform(image_size: tuple[int, int], interpolation: str) -> T.Compose:
    """Resize only, to a uint8 [C, H, W] tensor: the un-augmented view (query, gallery, train view 0) before
    `normalize_batch`."""
    return T.Compose([_resize(image_size, interpolation), T.PILToTensor()])


def normalize_batch(images: torch.Tensor, config: TransformConfig) -> torch.Tensor:
    """uint8 images [..., C, H, W] as float in [0, 1], ImageNet-normalised when `config.normalize`."""
    images = images.float().div(255)
    if config.normalize:
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(-1, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(-1, 1, 1)
        images = images.sub_(mean).div_(std)
    return images


def train_transform(image_size: tuple[int, int], config: TransformConfig) -> T.Compose:
    """The training augmentation; random draws come from torch's global RNG, so seeding torch fixes them."""
    steps: list = [_resize(image_size, config.interpolation)]
    if config.flip:
        steps.append(T.RandomHorizontalFlip(p=0.5))
    if config.pad_crop:
        steps += [T.Pad(config.padding), T.RandomCrop(tuple(image_size))]
    steps.append(T.ToTensor())
    if config.normalize:
        steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    if config.random_erasing:
        fill = erasing_fill(config)
        scale, ratio = tuple(config.erasing_scale), (config.erasing_ratio, 1.0 / config.erasing_ratio)
        if config.erasing_draw == "bot":
            steps.append(BoTRandomErasing(config.erasing_p, scale, ratio, fill))
        else:
            steps.append(T.RandomErasing(p=config.erasing_p, scale=scale, ratio=ratio, value=fill))
    return T.Compose(steps)


def erasing_fill(config: TransformConfig) -> tuple[float, ...]:
    """What random erasing writes per channel: BoT's PIXEL_MEAN values (`erasing_fill: bot`, after normalisation) or
    zeros."""
    return IMAGENET_MEAN if config.erasing_fill == "bot" else (0.0, 0.0, 0.0)


def erasing_rectangle(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], tries: int = 100
) -> tuple[int, int, int, int] | None:
    """BoT's RandomErasing draw, from torch's RNG: (top, left, h, w) or None when no try fits.

    Per try: area fraction uniform in `scale`, aspect h/w uniform in `ratio` (torchvision draws it log-uniform),
    h = round(sqrt(area·aspect)), w = round(sqrt(area/aspect)); a rectangle fits when h < height and w < width."""
    for _ in range(tries):
        area = torch.empty(1).uniform_(*scale).item() * height * width
        aspect = torch.empty(1).uniform_(*ratio).item()
        h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if h < height and w < width:
            top = int(torch.randint(0, height - h + 1, (1,)))
            left = int(torch.randint(0, width - w + 1, (1,)))
            return top, left, h, w
    return None


class BoTRandomErasing:
    """Random Erasing as reid-strong-baseline does it: with probability p, one rectangle drawn by `erasing_rectangle`
    is set, channel by channel, to `fill` (BoT passes PIXEL_MEAN, so after normalisation the values (0.485, 0.456,
    0.406) themselves)."""

    def __init__(
        self, p: float, scale: tuple[float, float], ratio: tuple[float, float], fill: tuple[float, ...]
    ) -> None:
        self.p, self.scale, self.ratio, self.fill = p, scale, ratio, fill

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(1).item() >= self.p:
            return image
        box = erasing_rectangle(image.shape[-2], image.shape[-1], self.scale, self.ratio)
        if box is not None:
            top, left, h, w = box
            fill = torch.tensor(self.fill, dtype=image.dtype).view(-1, 1, 1)
            image[..., top : top + h, left : left + w] = fill
        return image

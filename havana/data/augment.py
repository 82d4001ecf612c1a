"""The training augmentation of `transforms.train_transform` on whole uint8 batches, as tensor operations.

`train_transform` runs per image on PIL images, each draw from torch's global RNG: in a training job that is most of
the CPU time of an epoch, and it needs DataLoader workers. `augment_batch` takes a batch of already resized uint8
images [B, 3, H, W] (from `image_cache`), on the CPU or the training GPU, and gives the same distributions: horizontal
flip (p = 0.5 per image), zero pad of `padding` then a random H×W crop (offsets uniform in 0..2·padding), float and
normalisation (`normalize_batch`, bit-identical to ToTensor + Normalize), and random erasing with BoT's draw (or
torchvision's) and fill. All random numbers of a batch are drawn at once from one CPU `torch.Generator`
(`draw_augmentation`), so the result does not depend on the device, and the pixels move by one gather and one mask
(`apply_augmentation`), with no Python loop over images.

Erasing's "up to N tries" is a [B, N] draw: every try's rectangle is computed, and each image takes its first that
fits (h < H and w < W), exactly the rectangle the per-image loop stops at with the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from havana.data.transforms import erasing_fill, normalize_batch
from havana.errors import HavanaError
from havana.models.extractor_config import TransformConfig

ERASING_TRIES = {"bot": 100, "torchvision": 10}  # BoT's RandomErasing tries 100 rectangles; T.RandomErasing 10


@dataclass(frozen=True)
class AugmentationDraws:
    """The random choices for a batch of B images, each an int64 or bool tensor [B] on the CPU.

    `top`/`left`: the crop's offset in the padded image (0 when pad + crop is off); `erase`: whether the image gets a
    rectangle (drawn to fire and one of its tries fitted); `box_*`: that rectangle (meaningless where not `erase`)."""

    flip: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    erase: torch.Tensor
    box_top: torch.Tensor
    box_left: torch.Tensor
    box_height: torch.Tensor
    box_width: torch.Tensor


def erasing_rectangles(
    batch: int,
    height: int,
    width: int,
    config: TransformConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, ...]:
    """Per image the first fitting rectangle of ERASING_TRIES[config.erasing_draw] tries: (fits, top, left, h, w).

    Per try as `transforms.erasing_rectangle` (BoT) or T.RandomErasing (torchvision): area fraction uniform in
    `erasing_scale`; aspect h/w uniform in (r, 1/r) (BoT) or log-uniform (torchvision); h = round(sqrt(area·aspect)),
    w = round(sqrt(area/aspect)), both rounding half to even as Python's round; then top and left uniform over the
    positions that keep the rectangle inside. The uniforms are float32 as torch draws them, the rest float64 as the
    per-image code computes it in Python floats."""
    tries = ERASING_TRIES[config.erasing_draw]
    low, high = config.erasing_scale
    ratio = (config.erasing_ratio, 1.0 / config.erasing_ratio)
    fraction = torch.rand(batch, tries, generator=generator).double() * (high - low) + low
    unit = torch.rand(batch, tries, generator=generator).double()
    if config.erasing_draw == "bot":
        aspect = unit * (ratio[1] - ratio[0]) + ratio[0]
    else:
        log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
        aspect = torch.exp(unit * (log_high - log_low) + log_low)
    area = fraction * (height * width)
    h = torch.round(torch.sqrt(area * aspect)).long()
    w = torch.round(torch.sqrt(area / aspect)).long()
    fitting = (h < height) & (w < width)
    first = fitting.int().argmax(dim=1, keepdim=True)  # argmax gives the first maximum: the first try that fits
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    position = torch.rand(batch, 2, generator=generator).double()
    top = (position[:, 0] * (height - h + 1)).floor().long().clamp_(min=0)
    left = (position[:, 1] * (width - w + 1)).floor().long().clamp_(min=0)
    return fitting.any(dim=1), top, left, h, w


def draw_augmentation(
    batch: int, image_size: tuple[int, int], config: TransformConfig, generator: torch.Generator
) -> AugmentationDraws:
    """Every random choice of `batch` images of `image_size` (height, width) under `config`, from `generator` (CPU)."""
    height, width = image_size
    flip = torch.rand(batch, generator=generator) < 0.5 if config.flip else torch.zeros(batch, dtype=torch.bool)
    if config.pad_crop:
        offsets = torch.randint(0, 2 * config.padding + 1, (2, batch), generator=generator)
    else:
        offsets = torch.zeros(2, batch, dtype=torch.long)
    if config.random_erasing:
        fire = torch.rand(batch, generator=generator) < config.erasing_p
        fits, box_top, box_left, box_height, box_width = erasing_rectangles(batch, height, width, config, generator)
        erase = fire & fits
    else:
        erase = torch.zeros(batch, dtype=torch.bool)
        box_top = box_left = box_height = box_width = torch.zeros(batch, dtype=torch.long)
    return AugmentationDraws(flip, offsets[0], offsets[1], erase, box_top, box_left, box_height, box_width)


def _require_uint8_batch(images: torch.Tensor) -> None:
    """Refuse anything but a uint8 batch [B, C, H, W] (the cache's images), in one sentence."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {list(images.shape)}"
        raise HavanaError(f"batch augmentation needs uint8 images [B, C, H, W], got {got}.")


def apply_augmentation(images: torch.Tensor, draws: AugmentationDraws, config: TransformConfig) -> torch.Tensor:
    """uint8 images [B, 3, H, W] flipped, padded and cropped, as float (normalised when `config.normalize`), then
    erased, as the draws say; on the images' device.

    Flip and crop are one gather: every H×W window of the zero-padded batch and of its mirror image (padding is
    symmetric, so the padded flipped image is the flipped padded image) is a strided view (`unfold`, no copy), and each
    image takes its own window, as T.RandomHorizontalFlip, T.Pad and T.RandomCrop would give it."""
    _require_uint8_batch(images)
    batch, _channels, height, width = images.shape
    device = images.device
    pad = config.padding if config.pad_crop else 0
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad)) if pad else images
    if config.flip:
        padded = torch.cat([padded, padded.flip(-1)])  # image b mirrored is image B + b
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # [B or 2B, C, 2·pad + 1, 2·pad + 1, H, W]
    which = torch.arange(batch, device=device) + batch * draws.flip.to(device).long()
    out = windows[which, :, draws.top.to(device), draws.left.to(device)]  # [B, C, H, W], contiguous
    out = normalize_batch(out, config)
    if config.random_erasing:
        fill = erasing_fill(config)
        box = [t.to(device)[:, None] for t in (draws.box_top, draws.box_left, draws.box_height, draws.box_width)]
        y, x = torch.arange(height, device=device), torch.arange(width, device=device)
        inside_rows = (y >= box[0]) & (y < box[0] + box[2])  # [B, H]
        inside_cols = (x >= box[1]) & (x < box[1] + box[3])  # [B, W]
        mask = inside_rows[:, :, None] & inside_cols[:, None, :] & draws.erase.to(device)[:, None, None]
        out = torch.where(mask[:, None], torch.tensor(fill, device=device).view(1, -1, 1, 1), out)
    return out


def augment_batch(images: torch.Tensor, config: TransformConfig, generator: torch.Generator) -> torch.Tensor:
    """`train_transform`'s augmentation of a uint8 batch [B, 3, H, W] already resized: float [B, 3, H, W] on the
    images' device, the random choices drawn from `generator` (a CPU generator, whatever the device)."""
    _require_uint8_batch(images)
    draws = draw_augmentation(images.shape[0], (images.shape[-2], images.shape[-1]), config, generator)
    return apply_augmentation(images, draws, config)

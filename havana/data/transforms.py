"""Image transforms for re-ID (BoT): resize, random flip, pad + random crop, normalise, random erasing, each switchable.

Extraction ships the un-augmented view as uint8 (a quarter of the bytes through the DataLoader) and converts it to
float and normalises it once per batch on the model's device; `normalize_batch` does the same float operations as
`ToTensor` + `Normalize`, so both paths give bit-identical tensors.
"""

from __future__ import annotations

import torch
import torchvision.transforms as T

from havana.models.extractor_config import TransformConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def plain_transform(image_size: tuple[int, int]) -> T.Compose:
    """Resize only, to a uint8 [C, H, W] tensor: the un-augmented view (query, gallery, train view 0) before
    `normalize_batch`."""
    return T.Compose([T.Resize(tuple(image_size), interpolation=T.InterpolationMode.BICUBIC), T.PILToTensor()])


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
    steps: list = [T.Resize(tuple(image_size), interpolation=T.InterpolationMode.BICUBIC)]
    if config.flip:
        steps.append(T.RandomHorizontalFlip(p=0.5))
    if config.pad_crop:
        steps += [T.Pad(config.padding), T.RandomCrop(tuple(image_size))]
    steps.append(T.ToTensor())
    if config.normalize:
        steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    if config.random_erasing:
        # After normalisation, value 0 is the ImageNet mean colour: BoT erases with (about) the mean pixel.
        steps.append(
            T.RandomErasing(
                p=config.erasing_p,
                scale=tuple(config.erasing_scale),
                ratio=(config.erasing_ratio, 1.0 / config.erasing_ratio),
                value=0,
            )
        )
    return T.Compose(steps)

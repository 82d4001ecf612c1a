"""Image transforms for re-ID (BoT): resize, random flip, pad + random crop, normalise, random erasing, each switchable."""

from __future__ import annotations

import torchvision.transforms as T

from havana.extractor_config import TransformConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(image_size: tuple[int, int], config: TransformConfig) -> T.Compose:
    """Resize and normalise only: the un-augmented view used for query, gallery and train view 0."""
    steps: list = [T.Resize(tuple(image_size), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor()]
    if config.normalize:
        steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return T.Compose(steps)


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
        steps.append(T.RandomErasing(p=config.erasing_p, scale=tuple(config.erasing_scale),
                                     ratio=(config.erasing_ratio, 1.0 / config.erasing_ratio), value=0))
    return T.Compose(steps)

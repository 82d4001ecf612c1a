"""Test helpers for checkpoint import: random checkpoints in each framework's saved layout, and reference forwards.

Nothing here uses havana or its converter: key names and shapes are enumerated from the ResNet recipe itself, and each
reference forward is a torchvision ResNet rebuilt the way the source framework builds its model (stem ReLU, max-pool,
last stride, neck), loaded by key name. Layouts and architecture facts were read in the frameworks' public code
(reid-strong-baseline modeling/, fast-reid fastreid/modeling/ and utils/checkpoint.py, deep-person-reid
torchreid/models/resnet.py and utils/torchtools.py); none of their code is used.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

STAGES = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics every framework normalises with by default
STD = (0.229, 0.224, 0.225)


def resnet_layout(arch: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of a ResNet backbone without fc, in state-dict order (conv1, bn1, layer1..4; each block's
    convs and BNs, then its downsample), as BoT's, fast-reid's, torchreid's and torchvision's ResNets name them."""
    kind, counts = STAGES[arch]
    expansion = 4 if kind == "bottleneck" else 1
    layout: list[tuple[str, tuple[int, ...]]] = []

    def conv_bn(conv: str, bn: str, out: int, inp: int, k: int) -> None:
        layout.append((f"{conv}.weight", (out, inp, k, k)))
        layout.extend(
            [
                (f"{bn}.weight", (out,)),
                (f"{bn}.bias", (out,)),
                (f"{bn}.running_mean", (out,)),
                (f"{bn}.running_var", (out,)),
                (f"{bn}.num_batches_tracked", ()),
            ]
        )

    conv_bn("conv1", "bn1", 64, 3, 7)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), counts), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            if kind == "bottleneck":
                convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            else:
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            for i, (out, inp, k) in enumerate(convs, start=1):
                conv_bn(f"{p}.conv{i}", f"{p}.bn{i}", out, inp, k)
            if b == 0 and (stage > 1 or inplanes != planes * expansion):
                conv_bn(f"{p}.downsample.0", f"{p}.downsample.1", planes * expansion, inplanes, 1)
            inplanes = planes * expansion
    return layout


def feature_width(arch: str) -> int:
    return 512 * (4 if STAGES[arch][0] == "bottleneck" else 1)


def _random(name: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """A value that keeps a randomly weighted ResNet's activations O(1): Kaiming convs, BN near identity with
    random statistics, a bottleneck's last BN (bn3) damped so that 16 residual blocks do not blow up."""
    if name.endswith("num_batches_tracked"):
        return torch.randint(1, 10_000, (), generator=gen)
    if len(shape) == 4:
        return torch.randn(shape, generator=gen) * (2.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
    rand = torch.rand(shape, generator=gen)
    if name.endswith("running_var"):
        return 0.5 + rand
    if name.endswith(("running_mean", ".bias")):
        return 0.1 * torch.randn(shape, generator=gen)
    return 0.2 + 0.3 * rand if name.endswith(".bn3.weight") else 0.5 + 0.5 * rand


def random_backbone(arch: str, prefix: str, gen: torch.Generator) -> OrderedDict[str, Tensor]:
    return OrderedDict((prefix + k, _random(k, s, gen)) for k, s in resnet_layout(arch))


def random_bn(prefix: str, dim: int, gen: torch.Generator, bias_zero: bool) -> OrderedDict[str, Tensor]:
    """A BNNeck's entries; BoT and fast-reid freeze its bias at 0 (requires_grad False after zero init)."""
    bn = OrderedDict((prefix + k, _random(k, (dim,), gen)) for k in ("weight", "bias", "running_mean", "running_var"))
    if bias_zero:
        bn[prefix + "bias"] = torch.zeros(dim)
    bn[prefix + "num_batches_tracked"] = torch.tensor(12_345)
    return bn


def bot_checkpoint(
    arch: str = "resnet50", num_classes: int = 751, seed: int = 0, neck: bool = True
) -> OrderedDict[str, Tensor]:
    """BoT's saved state dict: `base.*` (ResNet, last stride 1), `bottleneck.*` BatchNorm1d(D) with bias 0 and a
    bias-free `classifier` Linear(D, num_classes); with `neck=False` (MODEL.NECK 'no') a Linear with bias instead."""
    gen, dim = torch.Generator().manual_seed(seed), feature_width(arch)
    state = random_backbone(arch, "base.", gen)
    if neck:
        state.update(random_bn("bottleneck.", dim, gen, bias_zero=True))
    state["classifier.weight"] = 0.001 * torch.randn(num_classes, dim, generator=gen)
    if not neck:
        state["classifier.bias"] = 0.01 * torch.randn(num_classes, generator=gen)
    return state


def fastreid_checkpoint(
    arch: str = "resnet50", num_classes: int = 751, seed: int = 0, version: str = "v1.3"
) -> dict[str, Any]:
    """fast-reid's Checkpointer file: {"model": state dict, "optimizer", "scheduler", "epoch"} of a Baseline with
    ResNet backbone and EmbeddingHead (BNNeck BatchNorm2d at `heads.bottleneck.0`). v1.0: persistent
    `pixel_mean`/`pixel_std` [1, 3, 1, 1] buffers first, classifier `heads.classifier.weight`; v1.2+: no pixel
    buffers (registered non-persistent), classifier `heads.weight` (the head's own parameter, saved before its
    children)."""
    gen, dim = torch.Generator().manual_seed(seed), feature_width(arch)
    model: OrderedDict[str, Tensor] = OrderedDict()
    if version == "v1.0":
        model["pixel_mean"] = (torch.tensor(MEAN) * 255).view(1, -1, 1, 1)
        model["pixel_std"] = (torch.tensor(STD) * 255).view(1, -1, 1, 1)
    model.update(random_backbone(arch, "backbone.", gen))
    weight = 0.01 * torch.randn(num_classes, dim, generator=gen)
    if version == "v1.0":
        model.update(random_bn("heads.bottleneck.0.", dim, gen, bias_zero=True))
        model["heads.classifier.weight"] = weight
    else:
        model["heads.weight"] = weight
        model.update(random_bn("heads.bottleneck.0.", dim, gen, bias_zero=True))
    return {
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 3.5e-6, "params": [0]}]},
        "scheduler": {"milestones": {40: 1, 90: 1}, "last_epoch": 119},
        "epoch": 119,
    }


def torchreid_checkpoint(
    arch: str = "resnet50", num_classes: int = 751, seed: int = 0, data_parallel: bool = False
) -> dict[str, Any]:
    """torchreid's `save_checkpoint` file: {"state_dict", "epoch", "rank1" (a numpy float), "optimizer"} of a
    `resnet50` (no fc block, classifier Linear(D, num_classes) with bias), keys prefixed `module.` under
    DataParallel."""
    gen, dim = torch.Generator().manual_seed(seed), feature_width(arch)
    state = random_backbone(arch, "", gen)
    state["classifier.weight"] = 0.01 * torch.randn(num_classes, dim, generator=gen)
    state["classifier.bias"] = 0.01 * torch.randn(num_classes, generator=gen)
    if data_parallel:
        state = OrderedDict(("module." + k, v) for k, v in state.items())
    return {
        "state_dict": state,
        "epoch": 60,
        "rank1": np.float32(0.875),
        "optimizer": {"state": {}, "param_groups": [{"lr": 3e-4, "params": [0]}]},
    }


def images_uint8(batch: int = 2, size: tuple[int, int] = (64, 32), seed: int = 0) -> Tensor:
    """A random uint8 image batch [B, 3, H, W], as a resized JPEG reaches every framework."""
    return torch.randint(0, 256, (batch, 3, *size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def to_tensor_normalize(images: Tensor) -> Tensor:
    """torchvision ToTensor + Normalize(ImageNet), as BoT and torchreid feed their models."""
    x = images.float() / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _resnet(arch: str, state: Mapping[str, Tensor], stem_relu: bool, ceil_pool: bool, last_stride: int) -> nn.Module:
    """A torchvision ResNet without fc (returns the GAP feature), rebuilt to a framework's recipe, loaded strictly."""
    model = torchvision.models.get_model(arch, weights=None)
    model.fc = nn.Identity()
    if not stem_relu:
        model.relu = nn.Identity()  # torchvision's ResNet.relu is the stem's only; each block has its own
    if ceil_pool:
        model.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    first = model.layer4[0]
    strided = first.conv2 if hasattr(first, "conv3") else first.conv1
    strided.stride = first.downsample[0].stride = (last_stride, last_stride)
    model.load_state_dict(dict(state), strict=True)
    return model.eval()


def _strip(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


@torch.no_grad()
def bot_reference(state: Mapping[str, Tensor], arch: str, images: Tensor, last_stride: int = 1) -> Tensor:
    """BoT's test feature: ResNet without stem ReLU, GAP, BatchNorm1d `bottleneck` (TEST.NECK_FEAT 'after'), or the
    GAP feature for MODEL.NECK 'no'."""
    pooled = _resnet(arch, _strip(state, "base."), stem_relu=False, ceil_pool=False, last_stride=last_stride)(
        to_tensor_normalize(images)
    )
    neck = _strip(state, "bottleneck.")
    if not neck:
        return pooled
    bn = nn.BatchNorm1d(pooled.shape[1]).eval()
    bn.load_state_dict(neck)
    return bn(pooled)


@torch.no_grad()
def fastreid_reference(
    checkpoint: Mapping[str, Any], arch: str, images: Tensor, last_stride: int = 1, normalised: bool = False
) -> Tensor:
    """fast-reid's test feature: 0-255 images normalised by pixel_mean/pixel_std (×255), ResNet with stem ReLU and
    ceil-mode max-pool, GAP, BatchNorm2d on [B, C, 1, 1] (`heads.bottleneck.0`), then [..., 0, 0].
    `normalised`: `images` are already normalised floats (skips fast-reid's own normalisation)."""
    model = checkpoint["model"]
    mean = model.get("pixel_mean", (torch.tensor(MEAN) * 255).view(1, -1, 1, 1))
    std = model.get("pixel_std", (torch.tensor(STD) * 255).view(1, -1, 1, 1))
    x = images if normalised else (images.float() - mean) / std
    backbone = _resnet(arch, _strip(model, "backbone."), stem_relu=True, ceil_pool=True, last_stride=last_stride)
    pooled = backbone(x)[..., None, None]
    bn = nn.BatchNorm2d(pooled.shape[1]).eval()
    bn.load_state_dict(_strip(model, "heads.bottleneck.0."))
    return bn(pooled)[..., 0, 0]


@torch.no_grad()
def torchreid_reference(checkpoint: Mapping[str, Any], arch: str, images: Tensor) -> Tensor:
    """torchreid's test feature for `resnet50`: standard ResNet (stem ReLU, last stride 2), GAP, no fc, no BN."""
    state = checkpoint["state_dict"]
    if all(k.startswith("module.") for k in state):
        state = _strip(state, "module.")
    backbone = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    return _resnet(arch, backbone, stem_relu=True, ceil_pool=False, last_stride=2)(to_tensor_normalize(images))

"""Baseline re-ID extractors: BoT (ResNet-18…152, last stride 1, GAP, BNNeck) and MGN (ResNet-50, 8 × 256 branches).

In training mode a model returns `ExtractorOutput` (logits per classifier, features per triplet loss); in eval mode
it returns the test feature [B, D]: BoT's after-BNNeck feature, MGN's eight BN'd 256-d features concatenated.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from havana.errors import HavanaError
from havana.models.extractor_config import ExtractorConfig

FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048, "mgn": 2048}
MGN_REDUCED_DIM = 256  # each of MGN's eight features


@dataclass
class ExtractorOutput:
    """What a training step needs: one logits tensor per classifier, one feature tensor per triplet loss."""

    logits: list[torch.Tensor]
    triplet_features: list[torch.Tensor]


def imagenet_resnet(arch: str, pretrained: bool, weights: str | os.PathLike | None) -> torchvision.models.ResNet:
    """A torchvision ResNet, with ImageNet weights from `weights` (a state-dict file) or torchvision's cache."""
    model = torchvision.models.get_model(arch, weights=None)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise HavanaError(
                f"ImageNet weights file {path} (extractor `weights:`) does not exist; place the "
                f"torchvision {arch} state dict there or set `weights: null`."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            raise HavanaError(
                f"ImageNet weights file {path} is not a torchvision {arch} state dict "
                f"({exc.__class__.__name__}); use the file torchvision publishes."
            ) from None
    elif pretrained:
        enum = torchvision.models.get_model_weights(arch)
        choice = enum.IMAGENET1K_V1  # the weights BoT and fast-reid started from
        file_name = os.path.basename(choice.url)
        try:
            model.load_state_dict(choice.get_state_dict(progress=False))
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a truncated download a RuntimeError
            target = Path(torch.hub.get_dir()) / "checkpoints" / file_name
            raise HavanaError(
                f"cannot load ImageNet weights for {arch} ({exc.__class__.__name__}: offline?); "
                f"download {choice.url} to {target} ($TORCH_HOME/hub/checkpoints/{file_name}), or "
                "point the extractor's `weights:` at a local copy, or set `pretrained: false`."
            ) from None
    return model


def set_first_block_stride(layer: nn.Sequential, stride: int) -> None:
    """Set the stride of the first block of a ResNet stage (its strided conv and its downsample)."""
    for module in layer[0].modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (stride, stride)


def stem(resnet: torchvision.models.ResNet, relu: bool, pool: str) -> list[nn.Module]:
    """conv1, bn1, ReLU (or an identity: BoT has none), max-pool (torchvision's, or fast-reid's "ceil": 3×3/2 without
    padding, ceil_mode). The ReLU and pool hold no state, so every switch gives the same state-dict keys."""
    pooling = resnet.maxpool if pool == "torchvision" else nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
    return [resnet.conv1, resnet.bn1, resnet.relu if relu else nn.Identity(), pooling]


def _bnneck(dim: int) -> nn.BatchNorm1d:
    """BNNeck (BoT): BatchNorm1d whose shift stays 0 (bias frozen), so the classifier sees a centred feature."""
    bn = nn.BatchNorm1d(dim)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    return bn


def _classifier(dim: int, num_classes: int) -> nn.Linear:
    """Bias-free linear classifier initialised with std 0.001 as in BoT."""
    linear = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(linear.weight, std=0.001)
    return linear


class BoTExtractor(nn.Module):
    """Bag-of-Tricks baseline: ResNet trunk (last stride configurable), GAP, BNNeck, bias-free classifier."""

    def __init__(
        self,
        arch: str,
        num_classes: int,
        last_stride: int = 1,
        pretrained: bool = False,
        weights: str | None = None,
        stem_relu: bool = True,
        stem_pool: str = "torchvision",
    ) -> None:
        super().__init__()
        resnet = imagenet_resnet(arch, pretrained, weights)
        set_first_block_stride(resnet.layer4, last_stride)
        self.trunk = nn.Sequential(
            *stem(resnet, stem_relu, stem_pool), resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        )
        self.feature_dim = FEATURE_DIMS[arch]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bnneck = _bnneck(self.feature_dim)
        self.classifier = _classifier(self.feature_dim, num_classes)

    def forward(self, images: torch.Tensor) -> ExtractorOutput | torch.Tensor:
        pooled = self.pool(self.trunk(images)).flatten(1)  # before BN: the triplet feature
        normed = self.bnneck(pooled)  # after BN: the inference feature
        if not self.training:
            return normed
        return ExtractorOutput(logits=[self.classifier(normed)], triplet_features=[pooled])


class ReducedHead(nn.Module):
    """One MGN branch output: max-pool a region, reduce 2048 → 256 (1×1 conv, BN, ReLU), BNNeck, classifier."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_dim, MGN_REDUCED_DIM, 1, bias=False), nn.BatchNorm2d(MGN_REDUCED_DIM), nn.ReLU(inplace=True)
        )
        nn.init.kaiming_normal_(self.reduce[0].weight, mode="fan_in")
        self.bnneck = _bnneck(MGN_REDUCED_DIM)
        self.classifier = _classifier(MGN_REDUCED_DIM, num_classes)

    def forward(self, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reduced feature before BNNeck, after BNNeck) of a [B, C, h, w] region."""
        reduced = self.reduce(nn.functional.adaptive_max_pool2d(region, 1)).flatten(1)
        return reduced, self.bnneck(reduced)


class MGNExtractor(nn.Module):
    """Multiple Granularity Network (Wang et al. 2018) as fast-reid builds it on ResNet-50.

    Shared trunk up to layer3[0]; three branches with their own copies of layer3[1:] and layer4: global (layer4 stride
    2), 2-part and 3-part (layer4 stride 1). Eight 256-d features (3 global, 2 + 3 horizontal stripes) each get a
    classifier; the three global ones also feed triplet losses; the test feature is the eight BN'd ones concatenated.
    """

    def __init__(
        self,
        num_classes: int,
        pretrained: bool = False,
        weights: str | None = None,
        stem_relu: bool = True,
        stem_pool: str = "torchvision",
    ) -> None:
        super().__init__()
        resnet = imagenet_resnet("resnet50", pretrained, weights)
        self.trunk = nn.Sequential(*stem(resnet, stem_relu, stem_pool), resnet.layer1, resnet.layer2, resnet.layer3[0])
        stage4 = nn.Sequential(*resnet.layer3[1:])
        global_conv5 = resnet.layer4
        part_conv5 = copy.deepcopy(resnet.layer4)
        set_first_block_stride(part_conv5, 1)
        self.branches = nn.ModuleList(
            [
                nn.Sequential(copy.deepcopy(stage4), copy.deepcopy(global_conv5)),
                nn.Sequential(copy.deepcopy(stage4), copy.deepcopy(part_conv5)),
                nn.Sequential(copy.deepcopy(stage4), copy.deepcopy(part_conv5)),
            ]
        )
        self.parts = (1, 2, 3)  # horizontal stripes per branch, besides each branch's global feature
        self.heads = nn.ModuleList([ReducedHead(2048, num_classes) for _ in range(3 + 2 + 3)])
        self.feature_dim = FEATURE_DIMS["mgn"]

    def forward(self, images: torch.Tensor) -> ExtractorOutput | torch.Tensor:
        shared = self.trunk(images)
        maps = [branch(shared) for branch in self.branches]
        regions = list(maps)  # the three whole maps first, then the stripes
        for feature_map, stripes in zip(maps[1:], self.parts[1:]):
            regions.extend(torch.tensor_split(feature_map, stripes, dim=2))
        outputs = [head(region) for head, region in zip(self.heads, regions)]
        normed = [after for _, after in outputs]
        if not self.training:
            return torch.cat(normed, dim=1)
        return ExtractorOutput(
            logits=[head.classifier(n) for head, n in zip(self.heads, normed)],
            triplet_features=[before for before, _ in outputs[:3]],
        )


def build_extractor(config: ExtractorConfig, num_classes: int) -> nn.Module:
    """The extractor named by `config.arch`, with `num_classes` identities in its classifiers (MGN keeps its own
    strides: global branch 2, part branches 1)."""
    stem_switches = {"stem_relu": config.stem_relu, "stem_pool": config.stem_pool}
    if config.arch == "mgn":
        return MGNExtractor(num_classes, pretrained=config.pretrained, weights=config.weights, **stem_switches)
    return BoTExtractor(
        config.arch,
        num_classes,
        last_stride=config.last_stride,
        pretrained=config.pretrained,
        weights=config.weights,
        **stem_switches,
    )


def save_extractor(path: str | os.PathLike, model: nn.Module, config: ExtractorConfig, num_classes: int) -> None:
    """Write a self-describing `model.pt` (config, num_classes, state dict) atomically."""
    from havana.utils.atomic import atomic_path
    from havana.utils.provenance import to_plain

    with atomic_path(path) as tmp:
        torch.save(
            {
                "config": to_plain(config),
                "num_classes": num_classes,
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            },
            tmp,
        )


def load_extractor(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ExtractorConfig]:
    """Rebuild a trained extractor from `model.pt` (eval mode, no ImageNet download) and return it with its config."""
    from havana.config import from_mapping
    from havana.utils import torch_io

    path = Path(path)
    if not path.is_file():
        raise HavanaError(f"extractor checkpoint {path} does not exist; run `havana train-extractor` first.")
    saved = torch_io.load(
        path, what="extractor checkpoint", advice="rerun `havana train-extractor`", map_location=map_location
    )
    try:
        config = from_mapping(ExtractorConfig, {**saved["config"], "pretrained": False, "weights": None}, str(path))
        with torch.device("meta"):  # no random initialisation: every tensor comes from the checkpoint
            model = build_extractor(config, saved["num_classes"])
        model.load_state_dict(saved["state_dict"], assign=True)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise HavanaError(
            f"{path} is not a havana extractor checkpoint ({exc.__class__.__name__}); rerun `havana train-extractor`."
        ) from None
    return model.eval(), config

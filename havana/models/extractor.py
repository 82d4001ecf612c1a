"""Baseline re-ID extractors: BoT (ResNet-18…152, last stride 1, GAP, BNNeck) and MGN (ResNet-50, 8 × 256, fast-reid's).

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
    ce_weight: float = 1.0  # each CE term's weight (fast-reid's MGN: 0.125)
    triplet_weight: float = 1.0  # each triplet term's weight (fast-reid's MGN: 0.2)


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


class GeMPooling(nn.Module):
    """Generalised-mean pooling with a learnt exponent p (fast-reid's GeneralizedMeanPoolingP: p starts at 3,
    activations clamped at 1e-6): mean(x^p)^(1/p) over the map, between average (p = 1) and max (p → ∞) pooling."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)


class ReducedHead(nn.Module):
    """One MGN output as fast-reid's EmbeddingHead builds it (EMBEDDING_DIM 256, Base-SBS pooling): GeM-pool a region,
    reduce 2048 → 256 with a bias-free 1×1 conv, BNNeck (the test feature), bias-free classifier."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.pool = GeMPooling()
        self.reduce = nn.Conv2d(in_dim, MGN_REDUCED_DIM, 1, bias=False)
        nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out")  # fast-reid's weights_init_kaiming for convs
        self.bnneck = _bnneck(MGN_REDUCED_DIM)
        self.classifier = _classifier(MGN_REDUCED_DIM, num_classes)

    def forward(self, region: torch.Tensor) -> torch.Tensor:
        """The BN'd 256-d feature of a [B, C, h, w] region."""
        return self.bnneck(self.reduce(self.pool(region)).flatten(1))


class MGNExtractor(nn.Module):
    """Multiple Granularity Network (Wang et al. 2018) as fast-reid's MGN meta-architecture builds it on ResNet-50.

    Shared trunk up to layer3[0]; three branches with their own copies of layer3[1:] and layer4, every layer4 with
    stride 1 (fast-reid's global branch takes BACKBONE.LAST_STRIDE, 1 in its configs; the part branches are built with
    stride 1). Eight 256-d features: each branch's whole map, then the 2-part branch's and the 3-part branch's
    horizontal stripes (torch.chunk: 16 rows give 8 + 8 and 6 + 6 + 4). The test feature is the eight BN'd features
    concatenated in fast-reid's order (b1, b2, b3, b21, b22, b31, b32, b33). Training: a classifier per feature (each
    CE weighted 0.125) and triplet losses on the BN'd b1, b2, b3, [b21, b22] and [b31, b32, b33] (each weighted 0.2),
    as fast-reid's MGN.losses with NECK_FEAT 'after'.
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
        conv5 = resnet.layer4
        set_first_block_stride(conv5, 1)
        self.branches = nn.ModuleList([nn.Sequential(copy.deepcopy(stage4), copy.deepcopy(conv5)) for _ in range(3)])
        self.parts = (1, 2, 3)  # horizontal stripes per branch, besides each branch's global feature
        self.heads = nn.ModuleList([ReducedHead(2048, num_classes) for _ in range(3 + 2 + 3)])
        self.feature_dim = FEATURE_DIMS["mgn"]

    def forward(self, images: torch.Tensor) -> ExtractorOutput | torch.Tensor:
        shared = self.trunk(images)
        maps = [branch(shared) for branch in self.branches]
        regions = list(maps)  # the three whole maps first, then the stripes
        for feature_map, stripes in zip(maps[1:], self.parts[1:]):
            cut = torch.chunk(feature_map, stripes, dim=2)
            if len(cut) != stripes:  # torch.chunk gives fewer pieces for 2 or 4 rows
                raise HavanaError(
                    f"MGN cuts a {feature_map.shape[2]}-row map into {len(cut)} stripes, not {stripes}; use images "
                    "at least 80 pixels high (fast-reid's MGN splits with torch.chunk too)."
                )
            regions.extend(cut)
        normed = [head(region) for head, region in zip(self.heads, regions)]
        if not self.training:
            return torch.cat(normed, dim=1)
        return ExtractorOutput(
            logits=[head.classifier(n) for head, n in zip(self.heads, normed)],
            triplet_features=[*normed[:3], torch.cat(normed[3:5], dim=1), torch.cat(normed[5:], dim=1)],
            ce_weight=1 / 8,
            triplet_weight=0.2,
        )


def build_extractor(config: ExtractorConfig, num_classes: int) -> nn.Module:
    """The extractor named by `config.arch`, with `num_classes` identities in its classifiers (MGN keeps its own
    strides: 1 in every branch, as fast-reid builds it)."""
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
    from havana.utils import torch_io
    from havana.utils.atomic import atomic_path
    from havana.utils.provenance import to_plain

    with atomic_path(path) as tmp:
        torch_io.save(
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

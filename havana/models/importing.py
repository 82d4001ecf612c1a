"""Import a trained re-ID checkpoint from BoT, fast-reid or torchreid as a havana BoT extractor (`havana
import-extractor`).

Only key names, shapes and architecture facts of the source frameworks are used (read in reid-strong-baseline 3da7e6f,
fast-reid v1.x and deep-person-reid f8cd150); none of their code. What each format is:

- "bot" (michuanhaohao/reid-strong-baseline): a bare state dict `base.{conv1,bn1,layer1..4}.*`, `bottleneck.*`
  (BatchNorm1d, the BNNeck) and `classifier.weight` (no bias). BoT's ResNet has no ReLU after bn1, so the havana
  entry needs `stem_relu: false`. Test feature: after BNNeck (BoT's default TEST.NECK_FEAT 'after'). A BoT model
  trained with MODEL.NECK 'no' has no `bottleneck.*` and a classifier with bias; its test feature is the pooled one,
  which havana reproduces with an identity BNNeck (see `identity_bnneck`).
- "fastreid" (JDAI-CV/fast-reid, Baseline meta-arch, ResNet backbone, EmbeddingHead): `{"model": state_dict, ...}`
  with `backbone.*`, `heads.bottleneck.0.*` (BatchNorm2d on [B, C, 1, 1]) and `heads.weight` (v1.2+) or
  `heads.classifier.weight` (v1.0/v1.1); v1.0 also stores `pixel_mean`/`pixel_std` [1, 3, 1, 1] (×255 scale). Its
  ResNet keeps the stem ReLU but (since commit 42cadae, 2020-11-06, i.e. every v1.x release) max-pools with
  kernel 3, stride 2, no padding, ceil_mode: the havana entry needs `stem_pool: ceil`. Test feature: after BNNeck
  (EmbeddingHead returns the BN'd feature in eval mode whatever HEADS.NECK_FEAT says).
- "torchreid" (KaiyangZhou/deep-person-reid, `resnet18..152`): `{"state_dict": ...}` (or a bare state dict), keys
  `conv1`, `bn1`, `layer1..4`, `classifier.{weight,bias}`, `module.` prefixes when trained under DataParallel.
  torchreid's `resnet50` has last stride 2, no BNNeck and no `fc` (fc_dims None); its test feature is the pooled
  2048-d vector. havana reproduces it with last_stride 2 and an identity BNNeck; the classifier bias is dropped
  (havana's classifier is bias-free; it changes logits only, never the test feature). `resnet50_fc512` (an `fc`
  block) is refused.

`ARCHITECTURE[format]` holds the havana extractor settings (stem, last stride, resize) under which the converted state
dict gives that framework's test feature; `import_extractor` writes them into a self-describing `model.pt`. Every
refusal is one sentence naming what was expected.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from havana.errors import HavanaError
from havana.models.extractor import BoTExtractor, save_extractor
from havana.models.extractor_config import IMPORT_FORMATS, ExtractorConfig, TransformConfig

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
BN_EPS = 1e-5  # havana's BNNeck eps (nn.BatchNorm1d default); identity_bnneck relies on it
IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # fast-reid's default MODEL.PIXEL_MEAN
IMAGENET_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)  # fast-reid's default MODEL.PIXEL_STD
TRUNK_INDEX = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}  # havana's trunk Sequential
BN_KEYS = ("weight", "bias", "running_mean", "running_var")  # num_batches_tracked is optional (0 when absent)


@dataclass(frozen=True)
class SourceArchitecture:
    """The havana extractor settings under which a format's checkpoint gives the source framework's test feature."""

    stem_relu: bool  # ReLU after bn1 (torchvision, fast-reid, torchreid: yes; BoT: no)
    stem_pool: str  # "torchvision": 3×3/2 max-pool, padding 1; "ceil": 3×3/2, no padding, ceil_mode (fast-reid)
    last_stride: int  # the source's default stride of layer4 (BoT MODEL.LAST_STRIDE, fast-reid BACKBONE.LAST_STRIDE)
    interpolation: str  # the source's test resize (BoT, torchreid: T.Resize's bilinear; fast-reid: bicubic)


ARCHITECTURE = {
    "bot": SourceArchitecture(stem_relu=False, stem_pool="torchvision", last_stride=1, interpolation="bilinear"),
    "fastreid": SourceArchitecture(stem_relu=True, stem_pool="ceil", last_stride=1, interpolation="bicubic"),
    "torchreid": SourceArchitecture(stem_relu=True, stem_pool="torchvision", last_stride=2, interpolation="bilinear"),
}

# unknown-key patterns that mean a variant havana's BoT extractor cannot express, and what to say about them
_VARIANTS = (
    (r"(^|\.)NL_\d", "non-local blocks (fast-reid WITH_NL)"),
    (r"\.IN\.", "IBN-Net layers (WITH_IBN)"),
    (r"\.se\.", "squeeze-excitation layers (WITH_SE)"),
    (r"heads\.bottleneck\.1\.", "an embedding conv (HEADS.EMBEDDING_DIM > 0)"),
    (r"pool_layer\.", "a learnt pooling layer (e.g. GeM)"),
    (r"^fc\.", "an fc block (torchreid resnet50_fc512)"),
)


@functools.cache
def backbone_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of a ResNet backbone without `fc` (torchvision's names, shared by BoT, fast-reid and torchreid)."""
    with torch.device("meta"):
        model = torchvision.models.get_model(arch, weights=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("fc.")}


def feature_dim(arch: str) -> int:
    """The width of the pooled feature: the channels of layer4's last BatchNorm (512 for ResNet-18/34, else 2048)."""
    last_bn = [k for k in backbone_shapes(arch) if k.startswith("layer4.") and k.endswith(".running_mean")][-1]
    return backbone_shapes(arch)[last_bn][0]


def _names(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(f"`{k}`" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _state_dict(obj: Any, fmt: str) -> dict[str, Tensor]:
    """The tensors of a loaded checkpoint, unwrapped from the format's container and without `module.` prefixes."""
    if isinstance(obj, nn.Module):
        raise HavanaError(
            f"the {fmt} checkpoint is a whole pickled {type(obj).__name__} module, not a state dict; "
            "re-save it in the source framework with `torch.save(model.state_dict(), FILE)`."
        )
    if not isinstance(obj, Mapping):
        raise HavanaError(
            f"the {fmt} checkpoint holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)."
        )
    if {"state", "param_groups"} <= set(obj):
        raise HavanaError(
            f"the {fmt} checkpoint is an optimizer state, not a model (BoT writes "
            "`<name>_optimizer_<epoch>.pth` beside `<name>_model_<epoch>.pth`); pass the model file."
        )
    container = {"fastreid": "model", "torchreid": "state_dict"}.get(fmt)
    if container is not None and isinstance(obj.get(container), Mapping):
        obj = obj[container]
    others = sorted(str(k) for k, v in obj.items() if not isinstance(v, Tensor))
    if others:
        wrapped = [
            f"`{k}` entry: pass --format {f}"
            for k, f in (("model", "fastreid"), ("state_dict", "torchreid"))
            if isinstance(obj.get(k), Mapping)
        ]
        raise HavanaError(
            f"the {fmt} checkpoint has non-tensor entries {_names(others)} where "
            f"{'a `' + container + '` state dict' if container else 'a bare state dict'} was expected"
            f"{'; it has a ' + wrapped[0] if wrapped else ''}."
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}  # saved from DataParallel / DistributedDataParallel
    return dict(obj)


def _roles(fmt: str) -> tuple[str, str | None, tuple[str, ...], tuple[str, ...]]:
    """(backbone prefix, BNNeck prefix or None, classifier weight keys, extra keys) of a format."""
    if fmt == "bot":
        return "base.", "bottleneck.", ("classifier.weight",), ("classifier.bias",)
    if fmt == "fastreid":
        return (
            "backbone.",
            "heads.bottleneck.0.",
            ("heads.weight", "heads.classifier.weight"),
            ("pixel_mean", "pixel_std"),
        )
    return "", None, ("classifier.weight",), ("classifier.bias",)


def _guess_arch(backbone: Mapping[str, Tensor]) -> str | None:
    """The ResNet whose backbone keys and shapes `backbone` matches exactly, if any."""
    for arch in ARCHS:
        shapes = backbone_shapes(arch)
        required = {k for k in shapes if not k.endswith("num_batches_tracked")}
        if required <= set(backbone) <= set(shapes) and all(tuple(backbone[k].shape) == shapes[k] for k in required):
            return arch
    return None


def identity_bnneck(dim: int) -> dict[str, Tensor]:
    """A BNNeck that passes its input through unchanged in eval mode: weight 1, bias 0, mean 0, var 1 − eps.

    (x − 0) / sqrt((1 − eps) + eps) · 1 + 0 is x exactly on CPU (float32(1 − 1e-5) + 1e-5 rounds to 1.0)."""
    return {
        "weight": torch.ones(dim),
        "bias": torch.zeros(dim),
        "running_mean": torch.zeros(dim),
        "running_var": torch.full((dim,), 1.0 - BN_EPS),
        "num_batches_tracked": torch.tensor(0),
    }


def _check_pixel_stats(state: Mapping[str, Tensor]) -> None:
    """fast-reid v1.0 stores its input normalisation; havana normalises with ImageNet's mean and std."""
    for key, expected in (("pixel_mean", IMAGENET_MEAN_255), ("pixel_std", IMAGENET_STD_255)):
        if key in state:
            value = state[key].detach().float().flatten()
            if value.numel() != 3 or not torch.allclose(value, torch.tensor(expected), atol=1e-3):
                raise HavanaError(
                    f"the fastreid checkpoint normalises images with {key} "
                    f"{[round(v, 3) for v in value.tolist()]}, but havana's extractors use ImageNet's "
                    f"{[round(v, 3) for v in expected]} (0-255 scale), so its features would differ."
                )


def convert_checkpoint(obj: Any, fmt: str, arch: str) -> dict[str, Tensor]:
    """havana `BoTExtractor` state dict (trunk.*, bnneck.*, classifier.weight) from a loaded `fmt` checkpoint.

    The classifier may have any number of rows (the source's training identities); build the extractor with
    `num_classes = result["classifier.weight"].shape[0]` and the settings of `ARCHITECTURE[fmt]`.
    """
    if fmt not in IMPORT_FORMATS:
        raise HavanaError(f"unknown checkpoint format '{fmt}'; valid: {', '.join(IMPORT_FORMATS)}.")
    if arch not in ARCHS:
        raise HavanaError(
            f"cannot import arch '{arch}'; importable: {', '.join(ARCHS)} (MGN checkpoints are not importable)."
        )
    state = _state_dict(obj, fmt)
    prefix, neck_prefix, classifier_keys, extra_keys = _roles(fmt)
    shapes, dim = backbone_shapes(arch), feature_dim(arch)
    neck_keys = {neck_prefix + k for k in BN_KEYS + ("num_batches_tracked",)} if neck_prefix else set()
    has_neck = bool(neck_keys & set(state))
    classifier = [k for k in classifier_keys if k in state]
    backbone = {
        k[len(prefix) :]: v
        for k, v in state.items()
        if k.startswith(prefix) and k not in neck_keys and k not in classifier_keys and k not in extra_keys
    }

    unknown = sorted(
        k for k in state if k.startswith(prefix) and k[len(prefix) :] in backbone and k[len(prefix) :] not in shapes
    )
    unknown += sorted(
        k
        for k in state
        if not k.startswith(prefix) and k not in neck_keys and k not in classifier_keys and k not in extra_keys
    )
    if fmt == "bot" and has_neck and "classifier.bias" in state:
        unknown.append("classifier.bias")  # BoT's BNNeck classifier is bias-free
    if unknown:
        variants = sorted({text for key in unknown for pattern, text in _VARIANTS if re.search(pattern, key)})
        why = f"; they belong to {' and '.join(variants)}, which havana's BoT extractor lacks" if variants else ""
        hint = _format_hint(state, fmt) or ("" if variants else _hint(backbone, arch))
        raise HavanaError(f"the {fmt} checkpoint has keys a {fmt} {arch} does not have: {_names(unknown)}{why}{hint}.")

    missing = [prefix + k for k in shapes if k not in backbone and not k.endswith("num_batches_tracked")]
    if has_neck:
        missing += sorted(neck_prefix + k for k in BN_KEYS if neck_prefix + k not in state)
    elif fmt == "fastreid" or (fmt == "bot" and "classifier.bias" not in state):
        missing += [neck_prefix + k for k in BN_KEYS]  # only BoT's MODEL.NECK 'no' (classifier with bias) has none
    if not classifier:
        missing.append(" or ".join(classifier_keys))
    if missing:
        raise HavanaError(f"the {fmt} checkpoint lacks {_names(missing)} of a {fmt} {arch}{_hint(backbone, arch)}.")

    wrong = [
        f"`{prefix + k}` {tuple(v.shape)} (expected {shapes[k]})"
        for k, v in backbone.items()
        if not k.endswith("num_batches_tracked") and tuple(v.shape) != shapes[k]
    ]
    wrong += [
        f"`{neck_prefix + k}` {tuple(state[neck_prefix + k].shape)} (expected ({dim},))"
        for k in BN_KEYS
        if has_neck and tuple(state[neck_prefix + k].shape) != (dim,)
    ]
    weight = state[classifier[0]]
    if weight.dim() != 2 or weight.shape[1] != dim or weight.shape[0] < 1:
        wrong.append(f"`{classifier[0]}` {tuple(weight.shape)} (expected (num_ids, {dim}))")
    bias = state.get("classifier.bias")
    if bias is not None and weight.dim() == 2 and tuple(bias.shape) != (weight.shape[0],):
        wrong.append(f"`classifier.bias` {tuple(bias.shape)} (expected ({weight.shape[0]},))")
    if wrong:
        raise HavanaError(
            f"the {fmt} checkpoint does not fit a {fmt} {arch}: {'; '.join(wrong[:3])}"
            f"{f' and {len(wrong) - 3} more' if len(wrong) > 3 else ''}{_hint(backbone, arch)}."
        )
    if fmt == "fastreid":
        _check_pixel_stats(state)

    out: dict[str, Tensor] = OrderedDict()
    for key in shapes:
        stage, _, rest = key.partition(".")
        value = backbone.get(key, torch.tensor(0))  # a BN's num_batches_tracked, absent from pre-0.4.1 files
        out[f"trunk.{TRUNK_INDEX[stage]}.{rest}"] = _stored(value)
    if has_neck:
        neck = {k: state[neck_prefix + k] for k in BN_KEYS}
        neck["num_batches_tracked"] = state.get(neck_prefix + "num_batches_tracked", torch.tensor(0))
    else:
        neck = identity_bnneck(dim)
    for key, value in neck.items():
        out[f"bnneck.{key}"] = _stored(value)
    out["classifier.weight"] = _stored(weight)
    return out


def _stored(value: Tensor) -> Tensor:
    """A detached CPU copy; floating tensors as float32 (a half-precision export loads into havana's float32 model)."""
    value = value.detach().to("cpu", copy=True)
    return value.float() if value.is_floating_point() else value


def _hint(backbone: Mapping[str, Tensor], arch: str) -> str:
    """'; it matches resnet18: pass --arch resnet18' when the backbone is another ResNet depth, else ''."""
    guess = _guess_arch(backbone)
    return f"; its backbone is a {guess}: pass --arch {guess}" if guess and guess != arch else ""


def _format_hint(state: Mapping[str, Tensor], fmt: str) -> str:
    """'; it looks like a fastreid checkpoint: pass --format fastreid' when the keys are another format's."""
    signature = {"bot": "base.conv1.weight", "fastreid": "backbone.conv1.weight", "torchreid": "conv1.weight"}
    other = [f for f, key in signature.items() if key in state and f != fmt]
    return f"; it looks like a {other[0]} checkpoint: pass --format {other[0]}" if other else ""


def _numpy_globals() -> list[Any]:
    """numpy scalar types that torchreid checkpoints carry (`rank1` is a numpy float), under numpy 1 and 2 names."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtypes = [
        getattr(np.dtypes, name)
        for name in ("Float16DType", "Float32DType", "Float64DType", "Int32DType", "Int64DType", "BoolDType")
        if hasattr(np, "dtypes")
    ]
    return [
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *dtypes,
    ]


def load_checkpoint_file(path: str) -> Any:
    """`torch.load(path, weights_only=True)` on CPU: tensors and plain containers only, never code.

    A file holding a pickled object (BoT's ignite `resnet50_model_<epoch>.pth` is a whole pickled `Baseline`) is
    refused in one sentence saying how to re-save it as a state dict.
    """
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HavanaError(f"checkpoint {path} does not exist; check the path.") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        if found is None:
            raise HavanaError(
                f"checkpoint {path} is truncated or not a torch file (UnpicklingError); download or copy it again."
            ) from None
        raise HavanaError(
            f"checkpoint {path} holds a pickled `{found.group(1)}` object, not only tensors, so havana "
            "will not unpickle it; load it in the framework that wrote it and save "
            "`torch.save(model.state_dict(), FILE)` (BoT: `torch.load(path).state_dict()`), then import "
            "that file."
        ) from None
    except (EOFError, RuntimeError, OSError, ValueError) as exc:
        raise HavanaError(
            f"checkpoint {path} is truncated or not a torch file ({type(exc).__name__}); download or copy it again."
        ) from None


def imported_config(
    fmt: str, arch: str, image_size: tuple[int, int], last_stride: int | None = None
) -> ExtractorConfig:
    """The havana extractor config under which a converted `fmt` checkpoint gives that framework's test feature."""
    source = ARCHITECTURE[fmt]
    return ExtractorConfig(
        arch=arch,
        pretrained=False,
        last_stride=source.last_stride if last_stride is None else last_stride,
        stem_relu=source.stem_relu,
        stem_pool=source.stem_pool,
        image_size=tuple(image_size),
        transforms=TransformConfig(interpolation=source.interpolation),
    )


def import_extractor(
    checkpoint: str | os.PathLike,
    fmt: str,
    arch: str,
    out: str | os.PathLike,
    image_size: tuple[int, int] = (256, 128),
    last_stride: int | None = None,
) -> ExtractorConfig:
    """Convert `checkpoint` (a `fmt` file) and write havana's `model.pt` to `out`, atomically, with provenance beside
    it (source format, file and sha256); `load_extractor(out)` then gives the source framework's test feature."""
    from havana.utils import provenance

    state = convert_checkpoint(load_checkpoint_file(str(checkpoint)), fmt, arch)
    config = imported_config(fmt, arch, image_size, last_stride)
    num_classes = state["classifier.weight"].shape[0]
    with torch.device("meta"):
        model = BoTExtractor(
            arch, num_classes, last_stride=config.last_stride, stem_relu=config.stem_relu, stem_pool=config.stem_pool
        )
    model.load_state_dict(state, strict=True, assign=True)  # the converter's keys are exactly the extractor's
    save_extractor(out, model, config, num_classes)
    provenance.write_beside(
        out,
        {
            "imported_from": {
                "format": fmt,
                "checkpoint": str(checkpoint),
                "sha256": provenance.file_sha256(checkpoint),
            },
            "extractor": provenance.to_plain(config),
            "num_classes": num_classes,
        },
    )
    return config


def export_bot(model_path: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write a havana BoT extractor's model.pt as BoT saves a state dict (`base.*`, `bottleneck.*`, bias-free
    `classifier.weight`), atomically; returns the number of tensors. Refused unless the model is built as BoT's
    (ResNet, no stem ReLU, torchvision's stem pool), since BoT's code would otherwise compute another feature."""
    from havana.models.extractor import load_extractor
    from havana.utils.atomic import atomic_path

    model, config = load_extractor(model_path)
    source = ARCHITECTURE["bot"]
    if config.arch not in ARCHS or (config.stem_relu, config.stem_pool) != (source.stem_relu, source.stem_pool):
        raise HavanaError(
            f"{model_path} is a {config.arch} with stem ReLU {config.stem_relu} and stem pool {config.stem_pool}, "
            f"not BoT's ResNet (stem ReLU {source.stem_relu}, pool {source.stem_pool}); export only BoT-built models."
        )
    stage_of = {index: stage for stage, index in TRUNK_INDEX.items()}
    state: dict[str, Tensor] = OrderedDict()
    for key, value in model.state_dict().items():
        group, _, rest = key.partition(".")
        if group == "trunk":
            index, _, rest = rest.partition(".")
            state[f"base.{stage_of[int(index)]}.{rest}"] = value
        else:
            state[f"{'bottleneck' if group == 'bnneck' else group}.{rest}"] = value
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    return len(state)

"""The `extractors.<name>` config section as typed dataclasses: model, transforms, training and extraction settings.

Defaults are the paper's BoT recipe (§4.1) as reid-strong-baseline implements it, where the paper is silent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from havana.config import Limit, above, at_least, between, from_mapping, section
from havana.errors import HavanaError

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mgn")
STEM_POOLS = ("torchvision", "ceil")  # stem max-pool 3×3/2: padding 1; no padding with ceil_mode (fast-reid)
INTERPOLATIONS = ("bilinear", "bicubic")  # resize: BoT's and torchreid's T.Resize default; fast-reid's
ERASING_DRAWS = ("bot", "torchvision")  # random-erasing rectangle draw: BoT's own RandomErasing; torchvision's
ERASING_FILLS = ("bot", "zero")  # erased value after normalisation: BoT's (0.485, 0.456, 0.406); 0 (the mean pixel)
IMPORT_FORMATS = ("bot", "fastreid", "torchreid")  # checkpoint layouts `havana import-extractor` reads
SCHEDULE_STEPS = ("epoch_start", "epoch_end")  # when the lr scheduler steps: BoT's (ignite EPOCH_STARTED); after
LOADERS = ("pil", "decoded")  # training images: PIL decode + per-image transforms in a DataLoader; decoded once, then
# whole batches augmented on the training device (havana.data.image_cache, havana.data.augment)


@dataclass
class TransformConfig:
    """Image augmentation switches (BoT: resize, flip, pad + crop, normalise, random erasing)."""

    flip: bool = True  # random horizontal flip, p = 0.5
    pad_crop: bool = True  # pad by `padding` pixels, then random crop back to image_size
    padding: int = 10  # BoT pads 10 pixels
    normalize: bool = True  # ImageNet mean/std normalisation
    random_erasing: bool = True  # Random Erasing (Zhong et al.); Table 6 turns it off
    erasing_p: float = 0.5  # probability of erasing one rectangle
    erasing_scale: tuple[float, float] = (0.02, 0.4)  # erased area fraction range (BoT sl, sh)
    erasing_ratio: float = 0.3  # aspect ratio range is (r, 1/r) (BoT r1)
    interpolation: str = "bilinear"  # resize of train and test images; BoT's T.Resize default (fast-reid: bicubic)
    erasing_draw: str = "bot"  # "bot": aspect h/w uniform in (r, 1/r), up to 100 tries (BoT's RandomErasing);
    # "torchvision": log-uniform aspect, 10 tries (T.RandomErasing)
    erasing_fill: str = "bot"  # "bot": channels set to (0.485, 0.456, 0.406) after normalisation, as BoT passes
    # PIXEL_MEAN as its eraser's mean; "zero": 0 after normalisation, i.e. the ImageNet mean pixel

    LIMITS: ClassVar[dict[str, Limit]] = {
        "padding": at_least(0),
        "erasing_p": between(0, 1),
        "erasing_scale": between(0, 1),
        "erasing_ratio": between(0, 1, low_open=True),
    }

    def __post_init__(self) -> None:
        _choose("transforms.interpolation", self.interpolation, INTERPOLATIONS)
        _choose("transforms.erasing_draw", self.erasing_draw, ERASING_DRAWS)
        _choose("transforms.erasing_fill", self.erasing_fill, ERASING_FILLS)


@dataclass
class ExtractorTrainConfig:
    """BoT optimisation schedule and losses (paper §4.1; values from reid-strong-baseline)."""

    epochs: int = 120  # training epochs
    lr: float = 3.5e-4  # Adam base learning rate
    weight_decay: float = 5e-4  # Adam weight decay
    warmup_epochs: int = 10  # linear warm-up length in epochs
    warmup_factor: float = 0.01  # warm-up starts at this fraction of lr
    schedule_step: str = "epoch_start"  # BoT steps WarmupMultiStepLR at each epoch's start, so epoch e (1-based)
    # trains at factor(e): 3.8e-5 in epoch 1, decays from epochs 40 and 70; "epoch_end": factor(e - 1)
    milestones: tuple[int, ...] = (40, 70)  # epochs at which lr is multiplied by gamma
    gamma: float = 0.1  # step decay factor
    p: int = 16  # identities per batch
    k: int = 4  # images per identity in a batch
    label_smoothing: float = 0.1  # epsilon of the label-smoothed cross-entropy
    triplet_margin: float = 0.3  # batch-hard triplet margin
    num_workers: int = 4  # DataLoader worker processes ("pil"); threads decoding the image cache ("decoded")
    loader: str = "pil"  # one of LOADERS: "decoded" decodes the train images once into a uint8 tensor beside the model
    # and augments whole batches on the training device, with the same distributions as "pil" but other draws
    amp: bool = False  # bf16 autocast and channels_last on CUDA (ignored on CPU); BoT trains in fp32, so this is an
    # opt-in departure (faster, not BoT's numbers)
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda[:i]"
    checkpoint_minutes: float = 10.0  # checkpoint after this much wall-clock time and on SIGTERM; 0: every epoch

    LIMITS: ClassVar[dict[str, Limit]] = {
        "epochs": at_least(1),
        "lr": above(0),
        "weight_decay": at_least(0),
        "warmup_epochs": at_least(0),
        "warmup_factor": between(0, 1, low_open=True),
        "milestones": at_least(0),
        "gamma": between(0, 1, low_open=True),
        "p": at_least(1),
        "k": at_least(1),
        "label_smoothing": between(0, 1, high_open=True),
        "triplet_margin": at_least(0),
        "num_workers": at_least(0),
        "checkpoint_minutes": at_least(0),
    }

    def __post_init__(self) -> None:
        _choose("train.schedule_step", self.schedule_step, SCHEDULE_STEPS)
        _choose("train.loader", self.loader, LOADERS)


@dataclass
class ExtractionConfig:
    """How `havana extract` runs: augmented views of train images and batching."""

    views: int = 1  # train views per image; view 0 is un-augmented, others use the train augmentation
    batch_size: int = 128  # images per forward pass
    num_workers: int = 4  # DataLoader worker processes on CUDA; on CPU images are read between forwards on threads
    amp: bool = False  # bf16 autocast on CUDA (ignored on CPU); BoT extracts in fp32, so this is an opt-in departure
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda[:i]"
    seed: int = 0  # seeds the per-image augmentation of train views 1..V-1
    random_erasing: bool | None = None  # train views' random erasing; None: as the extractor was trained (Table 6)

    LIMITS: ClassVar[dict[str, Limit]] = {"views": at_least(1), "batch_size": at_least(1), "num_workers": at_least(0)}


@dataclass
class ImportConfig:
    """`extractors.<name>.import`: a trained checkpoint to import (`havana import-extractor`) instead of training."""

    format: str  # one of IMPORT_FORMATS: the framework that saved the checkpoint
    checkpoint: str  # the checkpoint file, as that framework saves it
    last_stride: int | None = None  # layer4's stride it was trained with; None: the framework's default (BoT and
    # fast-reid 1, torchreid's resnet50 2)

    def __post_init__(self) -> None:
        _choose("import.format", self.format, IMPORT_FORMATS)
        if self.last_stride not in (None, 1, 2):
            raise HavanaError(f"import.last_stride must be 1 or 2, not {self.last_stride}.")


# An imported extractor's stem, last stride and resize are its framework's (havana.models.importing.ARCHITECTURE):
# an entry with `import` may not set them.
IMPORT_FIXES = ("stem_relu", "stem_pool", "last_stride", "pretrained", "weights", "model_from", "features")


@dataclass
class ExtractorConfig:
    """One extractor: BoT ResNet-18…152 or MGN (ResNet-50); num_classes comes from the training data at build time."""

    arch: str = "resnet50"  # one of ARCHS
    pretrained: bool = True  # start from ImageNet weights (torchvision IMAGENET1K_V1, as BoT did)
    weights: str | None = None  # a local ImageNet state-dict file instead of torchvision's download
    last_stride: int = 1  # stride of the first block of layer4 (BoT: 1, giving a 16×8 map at 256×128)
    stem_relu: bool = True  # ReLU after bn1 (torchvision, fast-reid, torchreid); BoT's ResNet has none (commented
    # out in its modeling/backbones/resnet.py), so BoT entries set false. True here keeps older model.pt files exact
    stem_pool: str = "torchvision"  # max-pool after the stem, one of STEM_POOLS ("ceil": fast-reid v1.x)
    image_size: tuple[int, int] = (256, 128)  # (height, width) images are resized to
    transforms: TransformConfig = field(default_factory=TransformConfig)  # augmentation switches
    train: ExtractorTrainConfig = field(default_factory=ExtractorTrainConfig)  # optimisation schedule
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)  # feature extraction settings
    model_from: str | None = None  # extract with another extractors entry's trained model.pt (no training of its
    # own); this entry's `extraction` then sets the views, e.g. Table 6's training views without random erasing
    import_: ImportConfig | None = None  # YAML key `import`: a checkpoint trained elsewhere replaces training
    features: str | None = None  # a feature file (.h5 in havana's schema or .npz) replaces training and extraction

    LIMITS: ClassVar[dict[str, Limit]] = {"image_size": at_least(1)}

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise HavanaError(f"unknown extractor arch '{self.arch}'; valid: {', '.join(ARCHS)}.")
        if self.last_stride not in (1, 2):
            raise HavanaError(f"last_stride must be 1 or 2, not {self.last_stride}.")
        _choose("stem_pool", self.stem_pool, STEM_POOLS)
        if self.features is not None and (self.model_from is not None or self.import_ is not None):
            raise HavanaError("an extractor with `features` needs no model; remove its model_from or import.")


def _choose(name: str, value: str, valid: tuple[str, ...]) -> None:
    """Refuse a setting outside its named choices, with one sentence listing them."""
    if value not in valid:
        raise HavanaError(f"unknown {name} '{value}'; valid: {', '.join(valid)}.")


def extractor_config(config: dict[str, Any], name: str) -> ExtractorConfig:
    """The typed `extractors.<name>` section of a loaded config file (its YAML key `import` is the field `import_`)."""
    entry = section(config, "extractors", name)
    where = f"extractors.{name}"
    if isinstance(entry, dict) and entry.get("import") is not None:
        # a key counts as set when it differs from its default: Snakemake's schema validation writes every default in
        defaults = {field.name: field.default for field in dataclasses.fields(ExtractorConfig)}
        fixed = sorted(key for key in set(entry) & set(IMPORT_FIXES) if entry[key] != defaults.get(key))
        if fixed:
            raise HavanaError(
                f"{where} imports a checkpoint, whose framework fixes {', '.join(fixed)}; remove "
                f"{'them' if len(fixed) > 1 else 'it'} (import.last_stride sets a non-default stride)."
            )
        entry = {("import_" if key == "import" else key): value for key, value in entry.items()}
    return from_mapping(ExtractorConfig, entry, where)

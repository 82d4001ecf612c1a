"""Synthetic re-ID dataset: pedestrian-like images rendered in the Market-1501 layout and naming, deterministic per
seed.

Each identity has its own appearance (clothing colours and patterns, sleeves, trousers/shorts/skirt, build, height,
hair, bag, hat); each camera has its own colour cast, brightness, background and preferred viewpoint; each shot
adds pose, shift, scale, blur, occlusion, clutter and sensor noise. `difficulty` in [0, 1] scales the nuisances and
shrinks the colour palette (more identities share colours). Train and test identities are disjoint; every query has
a gallery match under another camera; the gallery also holds distractors (pid 0) and junk crops (pid -1) as in
Market-1501. The output folder is `OUT/Synthetic-ReID/`, which `havana prepare synthetic --archive OUT` accepts.
"""

from __future__ import annotations

import colorsys
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from havana.data.datasets import SPLITS, Synthetic
from havana.errors import HavanaError
from havana.utils import atomic
from havana.utils.progress import progress

VIEWS = ("front", "back", "left", "right")
SKIN = ((224, 180, 150), (198, 140, 105), (150, 100, 70), (95, 65, 45))
HAIR = ((25, 20, 15), (70, 45, 25), (150, 110, 60), (120, 120, 120))
SUPERSAMPLE = 2  # draw at twice the size, then downsample (anti-aliasing)


@dataclass(frozen=True)
class SynthConfig:
    """Rendering parameters of the synthetic dataset."""

    ids: int = 200  # identities in total; half (rounded down) train, the rest test
    cameras: int = 6  # cameras, 2..9 (Market-1501 naming c1..c9)
    images_per_id: int = 10  # images per identity, at least 2 (spread over 2..5 cameras)
    height: int = 128  # image height in pixels
    width: int = 64  # image width in pixels
    # 0 = clean and distinctive, 1 = strong nuisances and a small colour palette. Calibrated with
    # benchmarks/synthetic_difficulty.py: random-init ResNet-18, CE, 20 CPU epochs at 64x32 reaches about 66% mAP.
    difficulty: float = 0.6
    distractors: float = 0.05  # distractor images (pid 0, one-off people) as a fraction of the test images
    junk: float = 0.05  # junk crops (pid -1, mostly background) as a fraction of the test images
    seed: int = 0  # everything is a function of this seed

    def validate(self) -> None:
        """Raise HavanaError naming the first parameter outside its range."""
        checks = [
            (self.ids >= 4, f"--ids must be at least 4 (2 train and 2 test identities), not {self.ids}"),
            (2 <= self.cameras <= 9, f"--cameras must be between 2 and 9, not {self.cameras}"),
            (self.images_per_id >= 2, f"--images-per-id must be at least 2, not {self.images_per_id}"),
            (
                self.height >= 32 and self.width >= 16,
                f"--height must be at least 32 and --width at least 16, not {self.height}x{self.width}",
            ),
            (0.0 <= self.difficulty <= 1.0, f"--difficulty must be between 0 and 1, not {self.difficulty}"),
            (0.0 <= self.distractors <= 1.0, f"--distractors must be between 0 and 1, not {self.distractors}"),
            (0.0 <= self.junk <= 1.0, f"--junk must be between 0 and 1, not {self.junk}"),
            (self.seed >= 0, f"--seed must be at least 0, not {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise HavanaError(f"{message}; pick a value in range.")


@dataclass(frozen=True)
class Identity:
    """What stays the same for one person across cameras and shots."""

    upper: tuple[int, int, int]  # shirt/jacket colour
    upper_second: tuple[int, int, int]  # colour of the shirt's pattern
    upper_pattern: str  # solid | hstripes | vstripes | check | split
    lower: tuple[int, int, int]  # trousers/shorts/skirt colour
    lower_kind: str  # trousers | shorts | skirt
    long_sleeves: bool
    shoes: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    long_hair: bool
    build: float  # width factor
    stature: float  # person height as a fraction of the image height
    bag: str  # none | backpack | shoulder
    bag_colour: tuple[int, int, int]
    hat: tuple[int, int, int] | None


@dataclass(frozen=True)
class Camera:
    """What one camera does to every image it takes."""

    cast: tuple[float, float, float]  # per-channel gain (colour cast)
    brightness: float
    wall: tuple[int, int, int]
    ground: tuple[int, int, int]
    view: str  # preferred viewpoint
    blur: float  # base blur radius in output pixels


def palette(difficulty: float) -> list[tuple[int, int, int]]:
    """Clothing colours: fewer, so more identities share them, as difficulty grows."""
    count = int(round(24 - 16 * difficulty))
    colours = []
    for i in range(count):
        hue = (i * 0.618034) % 1.0
        light = (0.25, 0.45, 0.65)[i % 3]
        sat = 0.15 if i % 7 == 6 else 0.75
        colours.append(tuple(int(255 * c) for c in colorsys.hls_to_rgb(hue, light, sat)))
    return colours + [(30, 30, 35), (235, 235, 230)]  # black and white clothes exist in every palette


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.normal(0.0, amount), 0, 255)) for c in colour)


def make_identity(rng: np.random.Generator, difficulty: float) -> Identity:
    """Draw one person's appearance."""
    colours = palette(difficulty)
    pick = lambda: colours[int(rng.integers(len(colours)))]  # noqa: E731
    return Identity(
        upper=_jitter(pick(), rng, 12),
        upper_second=_jitter(pick(), rng, 12),
        upper_pattern=str(rng.choice(["solid", "solid", "hstripes", "vstripes", "check", "split"])),
        lower=_jitter(pick(), rng, 12),
        lower_kind=str(rng.choice(["trousers", "trousers", "trousers", "shorts", "skirt"])),
        long_sleeves=bool(rng.random() < 0.6),
        shoes=_jitter((40, 35, 30), rng, 30),
        skin=SKIN[int(rng.integers(len(SKIN)))],
        hair=HAIR[int(rng.integers(len(HAIR)))],
        long_hair=bool(rng.random() < 0.35),
        build=float(rng.uniform(0.85, 1.15)),
        stature=float(rng.uniform(0.80, 0.94)),
        bag=str(rng.choice(["none", "none", "backpack", "shoulder"])),
        bag_colour=_jitter(pick(), rng, 20),
        hat=_jitter(pick(), rng, 10) if rng.random() < 0.2 else None,
    )


def make_camera(rng: np.random.Generator, difficulty: float, index: int) -> Camera:
    """Draw one camera's colour cast, brightness, background and preferred view."""
    cast = tuple(float(v) for v in 1.0 + rng.uniform(-0.3, 0.3, size=3) * difficulty)
    wall = tuple(int(v) for v in rng.integers(70, 200, size=3))
    ground = tuple(int(v) for v in rng.integers(60, 160, size=3))
    return Camera(
        cast=cast,
        brightness=float(1.0 + rng.uniform(-0.35, 0.25) * difficulty),
        wall=wall,
        ground=ground,
        view=VIEWS[(index + int(rng.integers(4))) % 4],
        blur=float(rng.uniform(0.0, 1.2) * difficulty),
    )


def _background(
    draw: ImageDraw.ImageDraw, size: tuple[int, int], camera: Camera, rng: np.random.Generator, difficulty: float
) -> None:
    """Wall, ground plane and clutter (boxes, poles, windows) in muted colours."""
    w, h = size
    horizon = int(h * rng.uniform(0.55, 0.75))
    draw.rectangle([0, 0, w, horizon], fill=_jitter(camera.wall, rng, 10))
    draw.rectangle([0, horizon, w, h], fill=_jitter(camera.ground, rng, 10))
    for _ in range(int(rng.integers(2, 4 + int(6 * difficulty)))):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(0.0, 0.9) * h
        bw, bh = rng.uniform(0.05, 0.5) * w, rng.uniform(0.05, 0.4) * h
        colour = tuple(int(v) for v in rng.integers(40, 220, size=3))
        draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=colour)


def _limb(
    draw: ImageDraw.ImageDraw,
    top: tuple[float, float],
    bottom: tuple[float, float],
    width: float,
    colour: tuple[int, int, int],
) -> None:
    draw.line([top, bottom], fill=colour, width=max(1, int(round(width))))


def _person(
    draw: ImageDraw.ImageDraw, person: Identity, view: str, cx: float, feet: float, height: float, phase: float
) -> None:
    """Draw a pedestrian standing on y=`feet`, centred on x=`cx`, `height` pixels tall, seen from `view`."""
    side = view in ("left", "right")
    facing = -1.0 if view == "left" else 1.0
    r = 0.075 * height
    top = feet - height
    head_y = top + r
    shoulder = top + 2.2 * r
    hip = top + 0.52 * height
    knee = hip + 0.24 * height
    ankle = feet - 0.03 * height
    torso_w = (0.19 if side else 0.30) * height * person.build
    limb_w = 0.085 * height * person.build
    swing = np.sin(phase) * 0.09 * height

    # backpack behind the body (seen from the back and the sides)
    if person.bag == "backpack" and view != "front":
        bx = cx - facing * torso_w * 0.55 if side else cx
        bw = torso_w * (0.55 if side else 0.8)
        draw.rounded_rectangle(
            [bx - bw / 2, shoulder + 0.02 * height, bx + bw / 2, hip - 0.04 * height],
            radius=max(1, int(r * 0.4)),
            fill=person.bag_colour,
        )
    # legs
    leg_x = (0.0, 0.0) if side else (-0.22 * torso_w, 0.22 * torso_w)
    legs_colour = person.skin if person.lower_kind != "trousers" else person.lower
    for sign, dx in zip((1.0, -1.0), leg_x):
        foot_x = cx + dx + sign * swing * (1.0 if side else 0.35)
        knee_x = (cx + dx + foot_x) / 2
        _limb(
            draw, (cx + dx, hip), (knee_x, knee), limb_w, person.lower if person.lower_kind != "skirt" else person.skin
        )
        _limb(draw, (knee_x, knee), (foot_x, ankle), limb_w * 0.9, legs_colour)
        draw.ellipse(
            [
                foot_x - limb_w * 0.7 + facing * limb_w * 0.3 * side,
                ankle - 0.01 * height,
                foot_x + limb_w * 0.7 + facing * limb_w * 0.3 * side,
                feet,
            ],
            fill=person.shoes,
        )
    if person.lower_kind == "skirt":
        draw.polygon(
            [
                (cx - torso_w * 0.45, hip - 0.02 * height),
                (cx + torso_w * 0.45, hip - 0.02 * height),
                (cx + torso_w * 0.7, knee),
                (cx - torso_w * 0.7, knee),
            ],
            fill=person.lower,
        )
    # torso with its pattern
    box = [cx - torso_w / 2, shoulder, cx + torso_w / 2, hip]
    draw.rounded_rectangle(box, radius=max(1, int(r * 0.5)), fill=person.upper)
    x0, y0, x1, y1 = box
    if person.upper_pattern == "hstripes":
        for y in np.arange(y0 + 2, y1, max(2.0, (y1 - y0) / 7)):
            draw.rectangle([x0 + 1, y, x1 - 1, y + max(1.0, (y1 - y0) / 16)], fill=person.upper_second)
    elif person.upper_pattern == "vstripes":
        for x in np.arange(x0 + 2, x1, max(2.0, (x1 - x0) / 5)):
            draw.rectangle([x, y0 + 2, x + max(1.0, (x1 - x0) / 12), y1 - 1], fill=person.upper_second)
    elif person.upper_pattern == "check":
        step = max(2.0, (x1 - x0) / 4)
        for i, x in enumerate(np.arange(x0 + 1, x1 - 1, step)):
            for j, y in enumerate(np.arange(y0 + 1, y1 - 1, step)):
                if (i + j) % 2:
                    draw.rectangle([x, y, min(x + step, x1 - 1), min(y + step, y1 - 1)], fill=person.upper_second)
    elif person.upper_pattern == "split":
        draw.rectangle([x0 + 1, (y0 + y1) / 2, x1 - 1, y1 - 1], fill=person.upper_second)
    if person.bag == "backpack" and view == "front":  # straps
        for dx in (-0.25, 0.25):
            draw.line(
                [(cx + dx * torso_w, shoulder), (cx + dx * torso_w, hip - 0.08 * height)],
                fill=person.bag_colour,
                width=max(1, int(limb_w * 0.3)),
            )
    # arms
    arm_x = (facing * 0.1 * torso_w,) if side else (-0.5 * torso_w - limb_w * 0.4, 0.5 * torso_w + limb_w * 0.4)
    for sign, dx in zip((-1.0, 1.0), arm_x):
        hand = (cx + dx + sign * 0.5 * swing * (1.0 if side else 0.2), hip + 0.04 * height)
        elbow = ((cx + dx + hand[0]) / 2, (shoulder + hand[1]) / 2)
        _limb(draw, (cx + dx, shoulder + limb_w * 0.3), elbow, limb_w * 0.8, person.upper)
        _limb(draw, elbow, hand, limb_w * 0.75, person.upper if person.long_sleeves else person.skin)
    if person.bag == "shoulder":
        bx = cx + (0.5 * torso_w + limb_w) * (facing if side else 1.0)
        draw.line(
            [(cx - 0.3 * torso_w, shoulder), (bx, hip - 0.05 * height)],
            fill=person.bag_colour,
            width=max(1, int(limb_w * 0.25)),
        )
        draw.rectangle([bx - limb_w, hip - 0.06 * height, bx + limb_w, hip + 0.06 * height], fill=person.bag_colour)
    # head, hair, hat
    draw.ellipse([cx - r, head_y - r, cx + r, head_y + r], fill=person.skin if view != "back" else person.hair)
    hair_box = [cx - r * 1.05, head_y - r * 1.1, cx + r * 1.05, head_y + (r * 0.2 if view != "back" else r)]
    draw.chord(hair_box, 180, 360, fill=person.hair)
    if person.long_hair:
        draw.rectangle(
            [
                cx - r * (0.3 if side else 1.0) - (facing * r * 0.6 if side else 0),
                head_y,
                cx + r * (0.3 if side else 1.0) - (facing * r * 0.6 if side else 0),
                head_y + 1.8 * r,
            ],
            fill=person.hair,
        )
    if person.hat is not None:
        draw.chord([cx - r * 1.1, head_y - r * 1.25, cx + r * 1.1, head_y + r * 0.3], 180, 360, fill=person.hat)


def render(
    person: Identity | None, camera: Camera, rng: np.random.Generator, config: SynthConfig, *, junk: bool = False
) -> bytes:
    """One JPEG image of `person` (or a junk crop) seen by `camera`, with the shot's nuisances drawn from `rng`."""
    d = config.difficulty
    size = (config.width * SUPERSAMPLE, config.height * SUPERSAMPLE)
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    _background(draw, size, camera, rng, d)
    w, h = size
    view = camera.view if rng.random() < 0.55 + 0.4 * d else VIEWS[int(rng.integers(4))]
    scale = 1.0 + rng.uniform(-0.18, 0.08) * d
    cx = w / 2 + rng.uniform(-0.14, 0.14) * d * w
    if junk:  # a bad detection: mostly background, a person cut by the border
        cx = w * float(rng.choice([-0.25, 1.25])) + rng.uniform(-0.1, 0.1) * w
    if person is not None:
        height = h * person.stature * scale
        feet = h * 0.975 - rng.uniform(0.0, 0.04) * h
        _person(draw, person, view, cx, feet, height, phase=float(rng.uniform(0, 2 * np.pi)))
    if rng.random() < 0.55 * d:  # occluder: a pole, a box in front of the legs, or a passer-by's shoulder
        kind = int(rng.integers(3))
        colour = tuple(int(v) for v in rng.integers(20, 230, size=3))
        if kind == 0:
            x = rng.uniform(0.1, 0.9) * w
            draw.rectangle([x, 0, x + rng.uniform(0.06, 0.16) * w, h], fill=colour)
        elif kind == 1:
            draw.rectangle(
                [rng.uniform(-0.3, 0.3) * w, rng.uniform(0.6, 0.8) * h, rng.uniform(0.7, 1.3) * w, h], fill=colour
            )
        else:
            x = float(rng.choice([-0.15, 0.8])) * w
            draw.ellipse([x, rng.uniform(0.2, 0.5) * h, x + 0.4 * w, h * 1.1], fill=colour)
    blur = camera.blur + rng.uniform(0.0, 0.8) * d
    if blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(blur * SUPERSAMPLE))
    image = image.resize((config.width, config.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    gain = np.asarray(camera.cast, dtype=np.float32) * camera.brightness * (1.0 + rng.uniform(-0.15, 0.15) * d)
    pixels = pixels * gain + rng.normal(0.0, 2.0 + 8.0 * d, size=pixels.shape)
    out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=int(rng.integers(75, 96)))
    return buffer.getvalue()


@dataclass(frozen=True)
class Shot:
    """One image to render: who, which camera, which split."""

    pid: int
    camera: int  # 0-based
    split: str
    index: int  # image index within the identity (seeds the nuisances)


def plan(config: SynthConfig) -> list[Shot]:
    """Which image of which identity goes to which camera and split; test ids get 1–2 cross-camera queries."""
    rng = np.random.default_rng([config.seed, 1])
    pids = np.arange(1, config.ids + 1)
    train_ids = set(rng.permutation(pids)[: config.ids // 2].tolist())
    shots = []
    for pid in pids.tolist():
        id_rng = np.random.default_rng([config.seed, 2, pid])
        count = int(id_rng.integers(2, min(config.cameras, config.images_per_id, 5) + 1))
        cams = id_rng.choice(config.cameras, size=count, replace=False).tolist()
        assigned = cams + id_rng.choice(cams, size=config.images_per_id - count).tolist()
        if pid in train_ids:
            shots += [Shot(pid, cam, "train", i) for i, cam in enumerate(assigned)]
            continue
        queries = {0} | ({1} if count >= 3 else set())  # first image of cams[0] (and of cams[1] with 3+ cameras)
        shots += [Shot(pid, cam, "query" if i in queries else "gallery", i) for i, cam in enumerate(assigned)]
    test_images = sum(s.split != "train" for s in shots)
    shots += [
        Shot(0, int(rng.integers(config.cameras)), "gallery", i)
        for i in range(int(round(config.distractors * test_images)))
    ]
    shots += [
        Shot(-1, int(rng.integers(config.cameras)), "gallery", i) for i in range(int(round(config.junk * test_images)))
    ]
    return shots


def statistics(shots: list[Shot]) -> dict[str, list[int]]:
    """(ids, images) per split as `prepare` counts them: junk excluded, the distractor pid 0 counted as one id."""
    kept = [s for s in shots if s.pid != -1]
    return {
        split: [len({s.pid for s in kept if s.split == split}), sum(s.split == split for s in kept)] for split in SPLITS
    }


def synthesize(config: SynthConfig, out: str | Path) -> Path:
    """Render the dataset into `out/Synthetic-ReID/` atomically and return that folder."""
    config.validate()
    shots = plan(config)
    cameras = [
        make_camera(np.random.default_rng([config.seed, 3, c]), config.difficulty, c) for c in range(config.cameras)
    ]
    identities: dict[int, Identity] = {}
    frames = [0] * config.cameras
    top = Path(out) / Synthetic.top_folder
    with atomic.atomic_path(top, directory=True) as tmp:
        for sub in Synthetic.subfolders.values():
            (tmp / sub).mkdir()
        for shot in progress(shots, "synth", unit="img"):
            rng = np.random.default_rng([config.seed, 4, shot.pid + 1, shot.index, shot.camera])
            if shot.pid > 0:
                if shot.pid not in identities:
                    identities[shot.pid] = make_identity(
                        np.random.default_rng([config.seed, 5, shot.pid]), config.difficulty
                    )
                person = identities[shot.pid]
            else:  # a distractor (pid 0) or a junk crop (pid -1) shows a one-off person
                person = make_identity(rng, config.difficulty)
            frames[shot.camera] += 1 + int(rng.integers(0, 40))
            frame = frames[shot.camera]
            name = (
                f"{shot.pid:04d}_c{shot.camera + 1}s{1 + frame // 10000 % 6}_{frame:06d}_01.jpg"
                if shot.pid >= 0
                else f"-1_c{shot.camera + 1}s{1 + frame // 10000 % 6}_{frame:06d}_01.jpg"
            )
            data = render(person, cameras[shot.camera], rng, config, junk=shot.pid == -1)
            (tmp / Synthetic.subfolders[shot.split] / name).write_bytes(data)
        info = {"generator": "havana synth", "config": asdict(config), "statistics": statistics(shots)}
        (tmp / Synthetic.info_file).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return top

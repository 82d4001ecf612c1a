"""How hard is the synthetic dataset? Render it, train a random-init ResNet-18 with cross-entropy for a few CPU
minutes, and print mAP / Rank-1 of its pooled features under the Market-1501 protocol (havana.evaluation.rank.evaluate).

The default difficulty of `havana synth` is calibrated so that this lands clearly below perfect (30-80% mAP), leaving
room for a head that improves features. Run: `.venv/bin/python benchmarks/synthetic_difficulty.py [--difficulty D]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from havana.data import acquire, datasets, synthetic
from havana.evaluation.rank import evaluate
from havana.utils.seeding import seed_everything


def load_split(root: Path, manifest, split: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """All images of a split as one float tensor in [0, 1], with their pids and camids."""
    rows = manifest[manifest["split"] == split]
    images = np.stack([np.asarray(Image.open(root / p).convert("RGB")) for p in rows["path"]])
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0,
        rows["pid"].to_numpy().copy(),
        rows["camid"].to_numpy().copy(),
    )


def augment(batch: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and pad-and-crop, per image."""
    flip = torch.rand(len(batch), generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad), mode="replicate")
    h, w = batch.shape[2:]
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w]


def features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised global-pooled ResNet features (the classifier removed)."""
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return torch.nn.functional.normalize(out, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulty", type=float, default=synthetic.SynthConfig.difficulty)
    parser.add_argument("--ids", type=int, default=200)
    parser.add_argument("--images-per-id", type=int, default=10)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on a shared CPU)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)

    work = Path(tempfile.mkdtemp(prefix="synthetic-difficulty-"))
    start = time.time()
    config = synthetic.SynthConfig(
        ids=args.ids,
        images_per_id=args.images_per_id,
        height=args.height,
        width=args.width,
        difficulty=args.difficulty,
        seed=args.seed,
    )
    rendered = synthetic.synthesize(config, work / "archives" / "synthetic")
    dataset = datasets.Synthetic()
    top = acquire.acquire(dataset, work, archive=rendered.parent)  # the same path `havana prepare` takes
    manifest = dataset.parse(top)
    render_s = time.time() - start

    train_x, train_pids, _ = load_split(top, manifest, "train")
    query_x, query_pids, query_cams = load_split(top, manifest, "query")
    gallery_x, gallery_pids, gallery_cams = load_split(top, manifest, "gallery")
    labels = torch.from_numpy(np.unique(train_pids, return_inverse=True)[1])
    mean, std = train_x.mean((0, 2, 3), keepdim=True), train_x.std((0, 2, 3), keepdim=True)
    normalise = lambda x: (x - mean) / std  # noqa: E731

    model = torchvision.models.resnet18(num_classes=int(labels.max()) + 1)  # random init
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        losses = []
        for i in range(0, len(order), args.batch_size):
            batch = order[i : i + args.batch_size]
            logits = model(normalise(augment(train_x[batch], generator)))
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        print(f"epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.3f} ({time.time() - start:.0f} s)", flush=True)
    train_s = time.time() - start

    model.fc = torch.nn.Identity()
    metrics = evaluate(
        features(model, normalise(query_x)),
        features(model, normalise(gallery_x)),
        query_pids,
        gallery_pids,
        query_cams,
        gallery_cams,
    )
    chance = evaluate(
        torch.randn(len(query_x), 512),
        torch.randn(len(gallery_x), 512),
        query_pids,
        gallery_pids,
        query_cams,
        gallery_cams,
    )
    print(
        f"synthetic difficulty {args.difficulty}: {args.ids} ids x {args.images_per_id} images at "
        f"{args.height}x{args.width}, {len(query_x)} queries, {len(gallery_x)} gallery; render {render_s:.1f} s, "
        f"train {train_s:.0f} s ({args.epochs} epochs, {args.threads} thread)"
    )
    print(
        f"ResNet-18 (random init, CE): mAP {100 * metrics['mAP']:.1f}%  R1 {100 * metrics['cmc'][0]:.1f}%  "
        f"R5 {100 * metrics['cmc'][4]:.1f}%  mINP {100 * metrics['mINP']:.1f}%   "
        f"(random features: mAP {100 * chance['mAP']:.1f}%, R1 {100 * chance['cmc'][0]:.1f}%)"
    )


if __name__ == "__main__":
    main()

"""Synthetic dataset: byte-identical for a seed, Market-1501 layout, disjoint train/test ids, cross-camera queries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from havana.cli import main
from havana.data import datasets, synthetic
from havana.errors import HavanaError

SMALL = dict(ids=10, cameras=4, images_per_id=5, height=48, width=24, distractors=0.2, junk=0.2)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path):
    first = tree(synthetic.synthesize(synthetic.SynthConfig(**SMALL, seed=3), tmp_path / "a"))
    second = tree(synthetic.synthesize(synthetic.SynthConfig(**SMALL, seed=3), tmp_path / "b"))
    other = tree(synthetic.synthesize(synthetic.SynthConfig(**SMALL, seed=4), tmp_path / "c"))
    assert first == second
    images = lambda t: {k: v for k, v in t.items() if k.endswith(".jpg")}  # noqa: E731
    assert len(images(first)) == 10 * 5 + round(0.2 * 25) * 2
    assert set(images(first).values()).isdisjoint(images(other).values())  # every image changes with the seed
    assert list((tmp_path / "a").iterdir()) == [tmp_path / "a" / "Synthetic-ReID"]  # no temporary folder left


def test_layout_splits_and_protocol_invariants(tmp_path):
    config = synthetic.SynthConfig(**SMALL)
    top = synthetic.synthesize(config, tmp_path)
    dataset = datasets.Synthetic()
    assert dataset.is_top(top) and datasets.Market1501().is_top(top)  # parsed exactly like Market-1501
    manifest = dataset.parse(top)
    names = [Path(p).name for p in manifest["path"]]
    assert all(datasets.Market1501.pattern.match(n) for n in names) and len(set(names)) == len(names)
    by_split = {s: manifest[manifest["split"] == s] for s in datasets.SPLITS}
    train_ids, query_ids = set(by_split["train"]["pid"]), set(by_split["query"]["pid"])
    gallery_ids = set(by_split["gallery"]["pid"])
    assert len(train_ids) == 5 and train_ids.isdisjoint(query_ids | gallery_ids)
    assert query_ids == gallery_ids - {0} and 0 in gallery_ids  # distractors kept
    assert len(list((top / "bounding_box_test").glob("-1_*.jpg"))) == round(0.2 * 25)  # junk on disk, not in manifest
    gallery = by_split["gallery"]
    for _, query in by_split["query"].iterrows():
        same = gallery[(gallery["pid"] == query["pid"]) & (gallery["camid"] != query["camid"])]
        assert len(same) >= 1, f"query {query['path']} has no cross-camera gallery match"
    assert manifest["camid"].between(0, config.cameras - 1).all()
    for _, rows in by_split["train"].groupby("pid"):
        assert len(rows) == config.images_per_id and rows["camid"].nunique() >= 2
    info = json.loads((top / "synthetic.json").read_text())
    assert {k: tuple(v) for k, v in info["statistics"].items()} == datasets.split_statistics(manifest)
    assert info["config"] == {**SMALL, "difficulty": config.difficulty, "seed": 0}


def test_synth_then_prepare_through_the_cli(tmp_path, capsys):
    assert (
        main(
            [
                "synth",
                "--out",
                str(tmp_path / "archives" / "synthetic"),
                "--ids",
                "6",
                "--images-per-id",
                "3",
                "--height",
                "32",
                "--width",
                "16",
            ]
        )
        == 0
    )
    assert (
        main(["prepare", "synthetic", "--root", str(tmp_path), "--archive", str(tmp_path / "archives" / "synthetic")])
        == 0
    )
    captured = capsys.readouterr()
    assert "differs" not in captured.out + captured.err  # synthetic.json's statistics are met exactly
    manifest = datasets.read_manifest(tmp_path / "synthetic" / "manifest.csv")
    assert manifest["path"].str.startswith("Synthetic-ReID/").all()
    assert all((tmp_path / "synthetic" / p).is_file() for p in manifest["path"])


def test_difficulty_shrinks_the_palette_and_bad_parameters_are_refused(tmp_path):
    assert len(synthetic.palette(1.0)) < len(synthetic.palette(0.5)) < len(synthetic.palette(0.0))
    with pytest.raises(HavanaError, match="--difficulty must be between 0 and 1, not 1.5"):
        synthetic.synthesize(synthetic.SynthConfig(difficulty=1.5), tmp_path)
    assert main(["synth", "--out", str(tmp_path), "--images-per-id", "1"]) == 2
    assert not any(tmp_path.iterdir())

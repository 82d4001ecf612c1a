"""`havana evaluate` end to end on real HDF5 feature files: metrics JSON, provenance, config, and clear errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from havana import cli
from havana.commands.evaluate import resolve_settings
from havana.config import load_yaml
from havana.data.features import FeatureSplit, read_features, write_features
from havana.evaluation.rank import evaluate
from havana.models.head import HavanaHead, HeadConfig, save_head


def make_split(rng: np.random.Generator, n: int, num_ids: int, dim: int = 6, views: int = 2) -> FeatureSplit:
    pids = rng.integers(0, num_ids, n)
    centres = np.random.default_rng(0).normal(size=(num_ids, dim))
    features = centres[pids][:, None, :] + 0.7 * rng.normal(size=(n, views, dim))
    return FeatureSplit(
        features=features, pids=pids, camids=rng.integers(0, 3, n), paths=[f"img{i}.jpg" for i in range(n)]
    )


@pytest.fixture
def feature_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "features.h5"
    splits = {
        "train": make_split(rng, 8, 4, views=3),
        "query": make_split(rng, 15, 5),
        "gallery": make_split(rng, 60, 5),
    }
    write_features(path, splits, {"dataset": "synthetic", "extractor": "bot_r18"})
    return path


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_writes_plain_and_flip_metrics_with_provenance(tmp_path, feature_file, capsys):
    out = tmp_path / "metrics" / "seed0.json"
    assert cli.main(["evaluate", "--features", str(feature_file), "--out", str(out), "--device", "cpu"]) == 0
    metrics = read_json(out)
    data = read_features(feature_file, splits=("query", "gallery"))
    q, g = data["query"], data["gallery"]
    ids = (q.pids, g.pids, q.camids, g.camids)
    want_plain = evaluate(q.features[:, 0], g.features[:, 0], *ids, metric="cosine")  # the config's default metric
    want_flip = evaluate(q.features.mean(1), g.features.mean(1), *ids, metric="cosine")
    for name, want in (("plain", want_plain), ("flip", want_flip)):
        got = metrics[name]
        assert got["mAP"] == pytest.approx(want["mAP"]) and got["mINP"] == pytest.approx(want["mINP"])
        assert got["cmc"] == want["cmc"] and len(got["cmc"]) == 50
        assert (got["R1"], got["R5"], got["R10"]) == (want["cmc"][0], want["cmc"][4], want["cmc"][9])
        assert 0.0 <= got["mAP"] <= 1.0 and got["num_valid_queries"] == want["num_valid_queries"]
    assert metrics["plain"]["mAP"] != metrics["flip"]["mAP"]  # the flipped view really changes the embedding
    record = metrics["provenance"]
    assert record["git_sha"] and record["config"]["evaluation"] == {"metric": "cosine", "max_rank": 50, "rerank": False}
    assert record["config"]["features"]["attrs"]["extractor"] == "bot_r18"
    beside = yaml.safe_load(out.with_name("seed0.json.provenance.yaml").read_text())
    assert beside["config"]["features"]["sha256"] == record["config"]["features"]["sha256"]
    captured = capsys.readouterr()
    assert "havana evaluate: wrote" in captured.out
    lines = [line for line in captured.err.splitlines() if ": chunk " in line]  # progress: one line per ranking
    assert [line.split(" | ")[0].split(" ", 2)[2] for line in lines] == [
        "evaluate plain: chunk 1/1 (100%)",
        "evaluate flip: chunk 1/1 (100%)",
    ]


def test_config_section_and_overrides(tmp_path, feature_file):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"evaluation": {"metric": "cosine", "max_rank": 20, "rerank": False}}))
    out = tmp_path / "m.json"
    assert (
        cli.main(
            ["evaluate", "--features", str(feature_file), "--out", str(out), "--config", str(config), "--device", "cpu"]
        )
        == 0
    )
    assert read_json(out)["provenance"]["config"]["evaluation"]["metric"] == "cosine"
    assert len(read_json(out)["plain"]["cmc"]) == 20
    assert (
        cli.main(
            [
                "evaluate",
                "--features",
                str(feature_file),
                "--out",
                str(out),
                "--config",
                str(config),
                "--metric",
                "euclidean",
                "--rerank",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert read_json(out)["provenance"]["config"]["evaluation"] == {
        "metric": "euclidean",
        "max_rank": 20,
        "rerank": True,
    }
    assert read_json(out)["provenance"]["config"]["rerank"] == {"k1": 20, "k2": 6, "lambda_value": 0.3}


def test_missing_file_is_one_sentence_and_no_output(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert cli.main(["evaluate", "--features", str(tmp_path / "none.h5"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_file_without_test_splits_is_rejected(tmp_path, capsys):
    path = tmp_path / "train_only.h5"
    write_features(path, {"train": make_split(np.random.default_rng(2), 5, 3)}, {"dataset": "synthetic"})
    out = tmp_path / "m.json"
    assert cli.main(["evaluate", "--features", str(path), "--out", str(out)]) == 2
    assert "no 'query' split" in capsys.readouterr().err
    assert not out.exists()


def test_incomplete_file_is_rejected(tmp_path, feature_file, capsys):
    import h5py

    with h5py.File(feature_file, "a") as h5:
        del h5.attrs["complete"]
    out = tmp_path / "m.json"
    assert cli.main(["evaluate", "--features", str(feature_file), "--out", str(out)]) == 2
    assert "incomplete" in capsys.readouterr().err and not out.exists()


def test_bad_config_value_is_rejected(tmp_path, feature_file, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"evaluation": {"metric": "manhattan"}}))
    assert (
        cli.main(
            ["evaluate", "--features", str(feature_file), "--out", str(tmp_path / "m.json"), "--config", str(config)]
        )
        == 2
    )
    assert "manhattan" in capsys.readouterr().err


def test_missing_head_is_rejected(tmp_path, feature_file, capsys):
    out = tmp_path / "m.json"
    assert (
        cli.main(
            [
                "evaluate",
                "--features",
                str(feature_file),
                "--head",
                str(tmp_path / "head.pt"),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "head checkpoint" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("config_file", ["config/config.yaml", "config/demo.yaml"])
def test_project_configs_give_valid_evaluation_settings(config_file):
    root = Path(__file__).resolve().parents[1]
    args = argparse.Namespace(config=str(root / config_file), metric=None, max_rank=None, rerank=None)
    settings = resolve_settings(args, load_yaml(args.config))
    assert settings.metric in ("euclidean", "cosine") and settings.max_rank >= 10


def test_head_embeddings_are_evaluated(tmp_path, feature_file):
    torch.manual_seed(0)
    head = HavanaHead(HeadConfig(feature_dim=6, num_classes=4, latent_dim=5))
    save_head(tmp_path / "head.pt", head)
    out = tmp_path / "m.json"
    assert (
        cli.main(
            [
                "evaluate",
                "--features",
                str(feature_file),
                "--head",
                str(tmp_path / "head.pt"),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = read_json(out)
    data = read_features(feature_file, splits=("query", "gallery"))
    q, g = data["query"], data["gallery"]
    with torch.no_grad():
        zq, zg = (head.eval().encode(torch.as_tensor(s.features))[0].numpy() for s in (q, g))  # [N, 2, 5]
    ids = (q.pids, g.pids, q.camids, g.camids)
    assert metrics["plain"]["mAP"] == pytest.approx(
        evaluate(zq[:, 0], zg[:, 0], *ids, metric="cosine")["mAP"], abs=1e-6
    )
    assert metrics["flip"]["mAP"] == pytest.approx(
        evaluate(zq.mean(1), zg.mean(1), *ids, metric="cosine")["mAP"], abs=1e-6
    )
    assert metrics["provenance"]["config"]["embedding_dim"] == 5
    assert metrics["provenance"]["config"]["head"]["path"] == str(tmp_path / "head.pt")


def test_head_of_another_feature_size_is_rejected(tmp_path, feature_file, capsys):
    save_head(tmp_path / "head.pt", HavanaHead(HeadConfig(feature_dim=8, num_classes=4)))
    out = tmp_path / "m.json"
    assert (
        cli.main(
            [
                "evaluate",
                "--features",
                str(feature_file),
                "--head",
                str(tmp_path / "head.pt"),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "takes 8-d inputs" in err and "6-d features" in err and not out.exists()


def test_tracked_evaluation_logs_the_json_metrics_and_a_rerun_resumes_its_run(tmp_path, feature_file):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "metrics" / "seed0.json"
    argv = [
        "evaluate",
        "--features",
        str(feature_file),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--tracking-uri",
        uri,
        "--run-name",
        "evaluate/synthetic/bot_r18/baseline/seed0",
    ]
    assert cli.main(argv) == 0 and cli.main(argv) == 0
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert len(runs) == 1  # the second call resumed the first call's run
    logged, written = runs[0].data.metrics, read_json(out)
    assert logged["eval/mAP"] == pytest.approx(written["plain"]["mAP"]) and logged["eval/flip_R1"] == pytest.approx(
        written["flip"]["R1"]
    )
    assert (out.parent / "seed0.mlflow" / "mlflow_run_id").read_text().strip() == runs[0].info.run_id


def test_evaluate_never_waits_on_a_gpu_lock_it_was_not_granted(tmp_path, feature_file):
    """Two fake GPUs, both locks held by other processes (training jobs under --resources gpu=2): evaluate, as the
    rule runs it (no --device), finishes on CPU at once instead of queueing behind the locks."""
    import os
    import subprocess
    import sys

    holder = (
        "import sys\nfrom havana.utils.device import claim_gpu\n"
        "print(claim_gpu(['0', '1'], lock_dir=sys.argv[1], wait_s=0), flush=True)\nsys.stdin.read()\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "HAVANA_GPU_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("HAVANA_GPU_WAIT_S", None)  # the default: wait for a lock without limit
    holders = [
        subprocess.Popen(
            [sys.executable, "-c", holder, str(tmp_path / "locks")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        assert sorted(h.stdout.readline().strip() for h in holders) == ["0", "1"]  # both fake GPUs are taken
        out = tmp_path / "m.json"
        done = subprocess.run(
            [sys.executable, "-m", "havana", "evaluate", "--features", str(feature_file), "--out", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "waiting" not in done.stderr and read_json(out)["provenance"]["config"]["device"] == "cpu"
    finally:
        for h in holders:
            h.communicate("", timeout=60)


def test_one_job_scores_every_seeds_head_as_separate_runs_would(tmp_path, feature_file, capsys):
    """`--head h0 h1 --out m0 m1 --seeds 0 1` reads the features once and writes what two single runs write; the
    baseline (no --head) writes each seed's copy of one scoring; mismatched counts are one sentence."""
    heads = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        heads.append(tmp_path / f"head{seed}.pt")
        save_head(heads[-1], HavanaHead(HeadConfig(feature_dim=6, num_classes=4, latent_dim=5)))
    common = ["evaluate", "--features", str(feature_file), "--device", "cpu"]
    together = [tmp_path / "together" / f"seed{seed}.json" for seed in (0, 1)]
    assert cli.main([*common, "--head", *map(str, heads), "--out", *map(str, together), "--seeds", "0", "1"]) == 0
    for seed in (0, 1):
        alone = tmp_path / "alone" / f"seed{seed}.json"
        assert cli.main([*common, "--head", str(heads[seed]), "--out", str(alone), "--seed", str(seed)]) == 0
        assert read_json(together[seed])["plain"] == read_json(alone)["plain"]
        assert read_json(together[seed])["flip"] == read_json(alone)["flip"]
    assert read_json(together[0])["plain"]["mAP"] != read_json(together[1])["plain"]["mAP"]  # two heads, two scores
    baseline = [tmp_path / "baseline" / f"seed{seed}.json" for seed in (0, 1)]
    assert cli.main([*common, "--out", *map(str, baseline), "--seeds", "0", "1"]) == 0
    assert read_json(baseline[0])["plain"] == read_json(baseline[1])["plain"]
    capsys.readouterr()
    assert cli.main([*common, "--head", str(heads[0]), "--out", *map(str, together)]) == 2
    assert "give one --head per --out: 1 --head for 2 --out." in capsys.readouterr().err

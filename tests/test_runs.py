"""MLflow as the ablation browser, on a real SQLite store: head runs tagged and named by row and seed, evaluation
metrics in the head's own run, baseline runs tagged as their table row, MLflow's source tags, the experiment kind the
UI needs, and `havana runs` printing the comparison from the store."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import yaml

from havana import cli
from havana.data.features import FeatureSplit, write_features
from havana.report.runs import RunRecord, render_comparison, view_state

CONFIG = {
    "seeds": [0, 1],
    "heads": {
        "train": {"epochs": 2, "p": 4, "k": 2, "lr": 1e-3, "device": "cpu"},
        "beta_by_dataset": {"synthetic": 1.0},
        "rows": {"havana": {"jst": True, "reconx": True, "klz": True, "reconz": True, "klv": True, "constraint": True}},
    },
    "evaluation": {"metric": "euclidean"},
    "extractors": {"bot_r18": {"arch": "resnet18"}},
    "tables": {
        "table3": {
            "caption": "Ablation.",
            "columns": [{"metric": "mAP", "dataset": "synthetic"}, {"metric": "R1", "dataset": "synthetic"}],
            "rows": [
                {"label": "Baseline", "extractor": "bot_r18", "row": "baseline", "paper": [80.0, 90.0]},
                {"label": "V+J+H+C", "extractor": "bot_r18", "row": "havana", "paper": [86.9, 94.4]},
            ],
        }
    },
}


def split(rng: np.random.Generator, ids: int, per_id: int, first: int) -> FeatureSplit:
    pids = np.repeat(np.arange(first, first + ids), per_id)
    centres = rng.normal(size=(ids, 8))
    features = centres[pids - first][:, None, :] + 0.5 * rng.normal(size=(len(pids), 2, 8))
    return FeatureSplit(
        features.astype(np.float32),
        pids,
        np.tile(np.arange(per_id) % 2, ids),
        [f"{first}_{i}.jpg" for i in range(len(pids))],
    )


def havana(monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["havana", *argv])  # the process a rule starts: tags name its subcommand
    assert cli.main(list(argv)) == 0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store after training the head for two seeds and evaluating heads and baseline, as the DAG does."""
    tmp = tmp_path_factory.mktemp("runs")
    monkeypatch = pytest.MonkeyPatch()
    rng = np.random.default_rng(0)
    features = tmp / "synthetic" / "features" / "bot_r18.h5"
    write_features(
        features,
        {"train": split(rng, 8, 4, 1), "query": split(rng, 5, 2, 100), "gallery": split(rng, 5, 4, 100)},
        {"dataset": "synthetic", "extractor": "bot_r18"},
    )
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    for seed in (0, 1):
        head = tmp / "synthetic" / "heads" / "bot_r18" / "havana" / f"seed{seed}"
        havana(
            monkeypatch,
            "train-head",
            "--features",
            str(features),
            "--row",
            "havana",
            "--config",
            str(config),
            "--out",
            str(head),
            "--seed",
            str(seed),
            "--tracking-uri",
            uri,
        )
        for row, extra in (("havana", ["--head", str(head / "head.pt")]), ("baseline", [])):
            havana(
                monkeypatch,
                "evaluate",
                "--features",
                str(features),
                *extra,
                "--config",
                str(config),
                "--out",
                str(tmp / "synthetic" / "metrics" / "bot_r18" / row / f"seed{seed}.json"),
                "--row",
                row,
                "--seed",
                str(seed),
                "--device",
                "cpu",
                "--tracking-uri",
                uri,
            )
    monkeypatch.undo()
    return tmp, uri


def test_every_head_run_holds_its_tags_switches_and_evaluation_metrics(store):
    from mlflow.tracking import MlflowClient

    tmp, uri = store
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("synthetic")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens the runs table
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == [
        "baseline seed0 · bot_r18 · synthetic",
        "baseline seed1 · bot_r18 · synthetic",
        "havana seed0 · bot_r18 · synthetic",
        "havana seed1 · bot_r18 · synthetic",
    ]
    for seed in (0, 1):
        for row, rule in (("havana", "train_head"), ("baseline", "evaluate")):
            run = runs[f"{row} seed{seed} · bot_r18 · synthetic"]
            tags = run.data.tags
            assert {k: tags[k] for k in ("dataset", "extractor", "row", "seed")} == {
                "dataset": "synthetic",
                "extractor": "bot_r18",
                "row": row,
                "seed": str(seed),
            }
            assert tags["table_cells"] == ("table3:V+J+H+C" if row == "havana" else "table3:Baseline")
            assert tags["rule"] == rule and tags["mlflow.project.entryPoint"] == rule
            assert tags["mlflow.source.name"] == f"havana {rule.replace('_', '-')}"
            assert len(tags["mlflow.source.git.commit"]) == 40 or tags["mlflow.source.git.commit"] == "unknown"
            written = json.loads((tmp / "synthetic" / "metrics" / "bot_r18" / row / f"seed{seed}.json").read_text())
            for key in ("mAP", "R1", "mINP"):
                assert run.data.metrics[f"eval/{key}"] == pytest.approx(written["plain"][key])
                assert run.data.metrics[f"eval/flip_{key}"] == pytest.approx(written["flip"][key])
            assert tags["label.table3"] == ("V+J+H+C" if row == "havana" else "Baseline")
        for row in ("havana", "baseline"):  # the seeds of one configuration share its hash
            hashes = {runs[f"{row} seed{seed} · bot_r18 · synthetic"].data.tags["config_hash"] for seed in (0, 1)}
            assert len(hashes) == 1 and len(hashes.pop()) == 64
        head_run = runs[f"havana seed{seed} · bot_r18 · synthetic"]
        assert head_run.data.params["row.jst"] == "True" and head_run.data.tags["eval.metric"] == "euclidean"
        assert f"evaluation/seed{seed}.json" in [
            a.path for a in client.list_artifacts(head_run.info.run_id, "evaluation")
        ]


def table3_runs(uri: str, *extra: str) -> list[str]:
    """`havana runs` on table3's runs with eval/mAP (and `extra` metrics), asserted to succeed; its argv."""
    argv = ["runs", "--tracking-uri", uri, "--experiment", "synthetic", "--table", "table3", "--metrics", "eval/mAP"]
    assert cli.main([*argv, *extra]) == 0
    return argv


def test_havana_runs_prints_rows_by_seeds_with_switches_and_metrics(store, capsys):
    tmp, uri = store
    table3_runs(uri, "eval/R1")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["row", "config", "seed", "extractor", "switches", "weights", "eval/mAP", "eval/R1"]
    body = [line.split() for line in lines[2:]]
    assert [cells[:1] + cells[2:3] for cells in body] == [
        ["Baseline", "0"],
        ["Baseline", "1"],
        ["Baseline", "mean"],
        ["V+J+H+C", "0"],
        ["V+J+H+C", "1"],
        ["V+J+H+C", "mean"],
    ]
    maps = [
        json.loads((tmp / "synthetic" / "metrics" / "bot_r18" / "havana" / f"seed{s}.json").read_text())["plain"]["mAP"]
        for s in (0, 1)
    ]
    assert body[3][-2] == f"{100 * maps[0]:.1f}" and body[4][-2] == f"{100 * maps[1]:.1f}"
    assert "cls+jst+reconx+klz+reconz+klv" in lines[5] and " C " in lines[5] and "α=0.2" in lines[5]
    assert f"{100 * np.mean(maps):.1f} ± {100 * np.std(maps, ddof=1):.1f}" in lines[7]
    assert cli.main(["runs", "--tracking-uri", uri, "--experiment", "synthetic", "--table", "table9"]) == 2
    assert cli.main(["runs", "--tracking-uri", f"sqlite:///{tmp / 'nope.db'}", "--experiment", "synthetic"]) == 2
    assert not (tmp / "nope.db").exists()


def test_comparison_of_hand_made_records():
    records = [
        RunRecord(
            "a",
            "",
            "ds",
            "ex",
            "row",
            str(seed),
            "",
            {"row.cls": "True", "row.klv": "False", "row.alpha": "0.2"},
            {"mAP": value},
        )
        for seed, value in ((0, 0.5), (1, 0.7))
    ]
    text = render_comparison(records, ["mAP", "R1"])
    assert text.splitlines()[2].split()[:3] == ["row", "untagged", "0"]
    assert "cls  " in text and "α=0.2" in text and "60.0 ± 14.1" in text and "n/a" in text


def test_havana_runs_saves_a_view_of_the_ui_that_selects_exactly_the_tables_runs(store, capsys):
    """The saved view's filter, run by MLflow's own search, returns exactly the runs `havana runs` printed; its
    columns are the row/seed/extractor tags, the row params that differ (the baseline has none: every row.* differs)
    and the metrics; the printed link names the view."""
    from mlflow.tracking import MlflowClient

    from havana.report.runs import VIEW_TAG, read_runs

    _, uri = store
    table3_runs(uri, "eval/R1")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("synthetic")
    state = json.loads(experiment.tags[VIEW_TAG + "havana-table3"])
    assert (
        f"#/experiments/{experiment.experiment_id}/runs?viewStateShareKey=havana-table3&workflowType=machine_learning"
        in capsys.readouterr().err
    )
    found = client.search_runs([experiment.experiment_id], filter_string=state["searchFilter"])
    assert sorted(run.info.run_id for run in found) == sorted(r.run_id for r in read_runs(uri, "synthetic", "table3"))
    assert len(found) == 4
    columns = state["selectedColumns"]
    assert columns[:5] == ["tags.`label.table3`", "tags.`row`", "tags.`config_hash`", "tags.`seed`", "tags.`extractor`"]
    assert columns[-2:] == ["metrics.`eval/mAP`", "metrics.`eval/R1`"]
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "label.table3"}]  # the paper's labels
    assert not [c for c in columns if c.startswith("params.")]  # one head row: no switch differs


def test_view_columns_are_the_switches_that_differ_between_head_rows():
    rows = {
        "vnae": {"row.jst": "False", "row.cls": "True", "row.gamma": "0.5"},
        "jst_g0.3": {"row.jst": "True", "row.cls": "True", "row.gamma": "0.3"},
    }
    records = [RunRecord(row, "", "ds", "ex", row, "0", "table4:x", params) for row, params in rows.items()]
    records.append(RunRecord("b", "", "ds", "ex", "baseline", "0", "table4:b", {"extraction.views": "2"}))
    state = view_state(records, "table4", ["mAP"])
    assert state["selectedColumns"] == [
        "tags.`label.table4`",
        "tags.`row`",
        "tags.`config_hash`",
        "tags.`seed`",
        "tags.`extractor`",
        "params.`row.gamma`",
        "params.`row.jst`",
        "metrics.`mAP`",
    ]
    assert state["searchFilter"] == "tags.table_cells LIKE '%table4:%'"
    assert view_state(records, None, ["mAP"])["searchFilter"] == "tags.row LIKE '%'"


@pytest.fixture(scope="module")
def edited(store, tmp_path_factory):
    """A copy of the store (and of its results folder) with one more run of the head row edited (gamma 0.3 instead
    of 0.5), seed 0 only, evaluated into the copy's metrics folder."""
    tmp, _ = store
    copy = tmp_path_factory.mktemp("edited")
    shutil.copytree(tmp / "synthetic", copy / "synthetic")
    shutil.copy(tmp / "mlflow.db", copy / "mlflow.db")
    config = json.loads(json.dumps(CONFIG))
    config["heads"]["rows"]["havana"]["gamma"] = 0.3
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{copy / 'mlflow.db'}"
    features = copy / "synthetic" / "features" / "bot_r18.h5"
    head = copy / "edited" / "seed0"
    monkeypatch = pytest.MonkeyPatch()
    havana(
        monkeypatch,
        "train-head",
        "--features",
        str(features),
        "--row",
        "havana",
        "--config",
        str(copy / "config.yaml"),
        "--out",
        str(head),
        "--seed",
        "0",
        "--tracking-uri",
        uri,
    )
    havana(
        monkeypatch,
        "evaluate",
        "--features",
        str(features),
        "--head",
        str(head / "head.pt"),
        "--config",
        str(copy / "config.yaml"),
        "--out",
        str(copy / "synthetic" / "metrics" / "bot_r18" / "havana" / "seed0.json"),
        "--row",
        "havana",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--tracking-uri",
        uri,
    )
    monkeypatch.undo()
    return copy, uri


def test_runs_of_an_edited_row_are_kept_apart_and_compared(store, edited, capsys):
    """Two configurations of the head row (gamma 0.5: seeds 0 and 1; gamma 0.3: seed 0, newer): never averaged
    together; by default the newest complete set, --config-hash picks the other, --all-configs shows both apart;
    the saved view selects the runs shown; --compare prints the cells before and after with the delta."""
    from mlflow.tracking import MlflowClient

    from havana.report.runs import VIEW_TAG, read_runs

    tmp, _ = store
    copy, uri = edited
    records = read_runs(uri, "synthetic", "table3")
    hashes = {r.config_hash for r in records if r.row == "havana"}
    new = next(
        r.config_hash
        for r in records
        if r.row == "havana" and r.run_id not in {x.run_id for x in read_runs(store[1], "synthetic", "table3")}
    )
    (old,) = hashes - {new}

    argv = table3_runs(uri)
    out = capsys.readouterr().out
    assert "mean of 3" not in out and out.count("mean of 2") == 2  # the baseline's two seeds and the old config's
    assert f"V+J+H+C   {old[:8]}" in out and new[:8] in out.split("\n\n")[-1]  # shown: old; the note names the new
    assert f"V+J+H+C (bot_r18): runs of 2 configurations; shown: {old[:8]} (the newest complete set)" in out
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("synthetic")
    state = json.loads(
        MlflowClient(tracking_uri=uri).get_experiment_by_name("synthetic").tags[VIEW_TAG + "havana-table3"]
    )
    found = MlflowClient(tracking_uri=uri).search_runs([experiment.experiment_id], filter_string=state["searchFilter"])
    assert sorted(run.data.tags["config_hash"] for run in found if run.data.tags["row"] == "havana") == [old, old]
    assert len(found) == 4

    table3_runs(uri, "--config-hash", new[:8])
    out = capsys.readouterr().out
    assert f"V+J+H+C   {new[:8]}  0" in out and "chosen by --config-hash" in out
    table3_runs(uri, "--all-configs")
    out = capsys.readouterr().out
    assert f"V+J+H+C   {new[:8]}  0" in out and f"V+J+H+C   {old[:8]}  mean of 2" in out and "mean of 3" not in out

    assert cli.main([*argv, "--compare", old[:8], new[:8]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"before: {old[:8]}" and lines[2].split()[:4] == ["dataset", "extractor", "row", "metric"]
    (line,) = [line.split() for line in lines[4:]]
    maps = {
        name: json.loads((folder / "synthetic" / "metrics" / "bot_r18" / "havana" / "seed0.json").read_text())
        for name, folder in (("old", tmp), ("new", copy))
    }
    old_mean = np.mean(
        [
            json.loads((tmp / "synthetic" / "metrics" / "bot_r18" / "havana" / f"seed{s}.json").read_text())["plain"][
                "mAP"
            ]
            for s in (0, 1)
        ]
    )
    assert line[:4] == ["synthetic", "bot_r18", "havana", "eval/mAP"]
    assert line[4:7] == [
        f"{100 * old_mean:.1f}",
        f"{100 * maps['new']['plain']['mAP']:.1f}",
        f"{100 * (maps['new']['plain']['mAP'] - old_mean):+.1f}",
    ]
    assert line[7].startswith("[") and line[-1] in ("yes", "no")

    assert cli.main(["runs", "--compare", str(tmp), str(copy), "--metrics", "eval/mAP", "eval/mINP"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[4:]]
    assert [row[2:4] for row in rows] == [
        ["baseline", "eval/mAP"],
        ["baseline", "eval/mINP"],
        ["havana", "eval/mAP"],
        ["havana", "eval/mINP"],
    ]
    assert rows[0][6:] == ["+0.0", "[+0.0,", "+0.0]", "no"] and rows[1][-2:] == ["n/a", "n/a"]
    assert cli.main(["runs", "--compare", str(tmp), "f" * 12, "--tracking-uri", uri, "--experiment", "synthetic"]) == 2
    sha = records[0].git_sha[:12]  # one commit made every run: the same runs on both sides, nothing differs
    assert cli.main([*argv, "--compare", sha, sha]) == 0
    assert {tuple(line.split()[6:9]) for line in capsys.readouterr().out.splitlines()[4:]} == {
        ("+0.0", "[+0.0,", "+0.0]")
    }


def test_havana_ui_prints_the_runs_table_and_saved_views_of_each_experiment(store, capsys, monkeypatch):
    """The links open the runs table (not MLflow 3.17's GenAI overview) and each view `havana runs` saved; the UI is
    `mlflow ui` on 127.0.0.1 with the store given."""
    from mlflow.tracking import MlflowClient

    from havana.commands import ui

    _, uri = store
    table3_runs(uri)
    capsys.readouterr()
    assert cli.main(["ui", "--backend-store-uri", uri, "--port", "5123", "--no-server"]) == 0
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("synthetic").experiment_id
    lines = capsys.readouterr().out.splitlines()
    assert not [line for line in lines if line.startswith("Default")]  # MLflow's empty experiment is left out
    assert (
        f"synthetic: runs: http://127.0.0.1:5123/#/experiments/{experiment}/runs?workflowType=machine_learning" in lines
    )
    assert (
        f"synthetic: view havana-table3: http://127.0.0.1:5123/#/experiments/{experiment}/runs?"
        "viewStateShareKey=havana-table3&workflowType=machine_learning"
    ) in lines
    started = []
    monkeypatch.setattr(
        ui.subprocess, "Popen", lambda argv: started.append(argv) or type("P", (), {"wait": lambda self: 0})()
    )
    assert cli.main(["ui", "--backend-store-uri", uri, "--port", "5123"]) == 0
    assert started[0][-7:] == ["ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", "5123"]
    assert cli.main(["ui", "--backend-store-uri", "sqlite:///nowhere/mlflow.db", "--no-server"]) == 2

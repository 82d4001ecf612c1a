"""The demo DAG end to end (slow): every stage on the synthetic dataset, metrics for every table cell, the tables,
figures, report and an MLflow run per training and evaluation job; then a second invocation finds nothing to do."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from havana.layout import Layout, model_source

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
DEMO = REPO / "config" / "demo.yaml"


def run_demo(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [str(SNAKEMAKE), "all", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", "--resources", "gpu=2", *extra, "--configfile", str(DEMO)]  # profiles/default applies
    return subprocess.run(command, capture_output=True, text=True, timeout=3600)


@pytest.mark.slow
def test_demo_runs_end_to_end_and_a_second_run_does_nothing(tmp_path):
    first = run_demo(tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-5000:]
    config = yaml.safe_load(DEMO.read_text())
    results = tmp_path / config["results_dir"]
    layout = Layout(str(results), str(tmp_path / config["resources_dir"]))

    cells = {(column.get("dataset") or row.get("dataset"), row["extractor"], row["row"])
             for name, spec in config["tables"].items() if re.fullmatch(r"table\d+", name)
             for row in spec["rows"] for column in spec["columns"]}
    for dataset, extractor, head in cells:
        for seed in config["seeds"]:
            metrics = json.loads(Path(layout.metrics(dataset, extractor, head, seed)).read_text())
            for block in ("plain", "flip"):
                assert 0.0 <= metrics[block]["mAP"] <= 1.0 and 0.0 <= metrics[block]["R1"] <= 1.0

    for name in [n for n in config["tables"] if re.fullmatch(r"table\d+", n)] + ["summary"]:
        for ext in ("md", "csv", "tex"):
            assert Path(layout.table(name, ext)).stat().st_size > 0
    assert all(Path(layout.figure(name)).stat().st_size > 0 for name in config["figures"])

    from havana import plan  # `havana plan`'s disk estimate against the files the demo really left

    estimate = {stage.stage: stage.kept for stage in plan.make_plan(config).stages}
    for stage, real in plan.measured_kept(config, tmp_path).items():
        assert estimate[stage] == pytest.approx(real, rel=0.05), stage

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config["tracking_uri"].replace("sqlite:///", f"sqlite:///{tmp_path}/"))
    experiment = client.get_experiment_by_name("synthetic")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    names = sorted(run.info.run_name for run in runs)
    head_jobs = {(d, e, h) for d, e, h in cells if h != "baseline"}
    for dataset, extractor, head in head_jobs:
        for seed in config["seeds"]:
            assert f"{dataset}/{extractor}/{head}/seed{seed}" in names
    trained = {model_source(config, extractor) for extractor in config["extractors"]}  # model_from entries train none
    assert {f"synthetic/{extractor}" for extractor in trained} <= set(names)
    for dataset, extractor, head in cells:  # every evaluate job, baseline included, has its run too
        for seed in config["seeds"]:
            assert f"evaluate/{dataset}/{extractor}/{head}/seed{seed}" in names
    assert len(names) == len(set(names)) and all(run.info.status == "FINISHED" for run in runs)

    report = run_demo(tmp_path, "--report", str(results / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert (results / "report.html").stat().st_size > 0

    again = run_demo(tmp_path)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr

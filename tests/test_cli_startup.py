"""Start-up cost of the CLI: printing help, and the lightweight jobs (table, prepare), import neither torch nor
matplotlib nor pandas; the heavy libraries are imported by the commands that run them."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "matplotlib", "mlflow", "pandas", "h5py", "sklearn")


def imported_modules(*argv: str) -> set[str]:
    """Top-level packages a fresh `python -X importtime -m havana ARGV` imports (importtime lists every import)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "havana", *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    names = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("table", "--help"),
        ("summary", "--help"),
        ("figure", "--help"),
        ("prepare", "--help"),
        ("train-head", "--help"),
        ("evaluate", "--help"),
        ("extract", "--help"),
        ("train-extractor", "--help"),
        ("import-extractor", "--help"),
        ("import-features", "--help"),
        ("export-extractor", "--help"),
        ("export-features", "--help"),
        ("synth", "--help"),
        ("runs", "--help"),
        ("ui", "--help"),
        ("plan", "--help"),
    ],
)
def test_help_imports_no_heavy_library(argv):
    modules = imported_modules(*argv)
    assert "havana" in modules and "argparse" in modules  # the oracle sees the imports it should
    assert not modules & set(HEAVY), f"`havana {' '.join(argv)}` imports {sorted(modules & set(HEAVY))}"


def test_the_table_job_and_its_renderers_do_not_import_torch_or_matplotlib():
    code = (
        "import sys; import havana.commands.table, havana.commands.summary, havana.report.tables, "
        "havana.report.summary, havana.layout, "
        "havana.commands.prepare; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{HEAVY!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_runs_default_metrics_are_what_evaluate_logs(tmp_path):
    """Two independent facts: the metrics `havana runs` shows by default (its parser's default, the columns its help
    names) and the metric keys `havana evaluate` really logs into the MLflow store. A renamed logged metric (or a
    default naming one that is never logged) makes the default comparison a column of n/a: this fails."""
    import numpy as np
    from mlflow.tracking import MlflowClient

    from havana import cli
    from havana.data.features import FeatureSplit, write_features
    from havana.report.runs import read_runs, render_comparison

    rng = np.random.default_rng(0)

    def split(n: int, camera: int) -> FeatureSplit:
        pids = np.arange(n) % 4
        return FeatureSplit(
            rng.normal(size=(n, 2, 6)).astype(np.float32), pids, np.full(n, camera), [f"{n}_{i}.jpg" for i in range(n)]
        )

    features = tmp_path / "features.h5"
    write_features(
        features,
        {"train": split(8, 0), "query": split(8, 0), "gallery": split(16, 1)},
        {"dataset": "synthetic", "extractor": "bot_r18"},
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "metrics" / "baseline" / "seed0.json"
    evaluate = ["evaluate", "--features", str(features), "--out", str(out), "--device", "cpu", "--tracking-uri", uri]
    assert cli.main([*evaluate, "--row", "baseline", "--seed", "0"]) == 0
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    logged = set(run.data.metrics)

    parser = cli.build_parser()
    default = parser.parse_args(["runs", "--tracking-uri", uri, "--experiment", "synthetic"]).metrics
    assert default and set(default) <= logged, (
        f"`havana runs` shows {default} by default; evaluate logs {sorted(logged)}"
    )
    [record] = read_runs(uri, "synthetic")
    rendered = render_comparison([record])  # the renderer's own default columns
    assert "n/a" not in rendered, rendered

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


def test_runs_default_metrics_are_the_renderers():
    from havana.commands.runs import DEFAULT_METRICS
    from havana.report import runs

    assert DEFAULT_METRICS == runs.DEFAULT_METRICS

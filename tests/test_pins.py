"""Every dependency is pinned once, in pyproject.toml; environment.yml installs this package (and so those pins) with
its test extra into a conda Python of the version pyproject.toml requires; the rules' environment (--sdm conda) is the
same, installing this checkout by a path pip really resolves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_dependency_is_pinned_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    assert requirements and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", r) for r in requirements), requirements


def test_environment_yml_installs_the_package_with_its_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [item for item in env["dependencies"] if isinstance(item, str)]
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert pip_section == ["-e .[test]"]  # no second list of pins to drift
    python = next(spec for spec in conda if spec.startswith("python="))
    assert project["requires-python"] == f">={python[7:]},<3.{int(python[9:]) + 1}"
    assert "pip" in conda


def test_the_rules_environment_is_environment_yml_installing_this_checkout_by_path(tmp_path) -> None:
    """`--sdm conda` builds workflow/envs/havana.yaml from a copy under .snakemake/conda/, where conda runs pip: the
    package path comes from HAVANA_SOURCE, which the workflow sets; pip (really run, offline) resolves it from there."""
    user = yaml.safe_load((ROOT / "environment.yml").read_text())
    jobs = yaml.safe_load((ROOT / "workflow" / "envs" / "havana.yaml").read_text())
    assert jobs["channels"] == user["channels"] and jobs["dependencies"][:-1] == user["dependencies"][:-1]
    assert jobs["dependencies"][-1] == {"pip": ["-e ${HAVANA_SOURCE}[test]"]}
    rules = "\n".join(path.read_text() for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    assert re.findall(r'^CONDA_ENV = "(.*)"$', rules, flags=re.MULTILINE) == ["../envs/havana.yaml"]
    assert "os.environ.update(HAVANA_SOURCE=workflow.basedir)" in rules
    named = re.findall(r"^\s+conda:\n\s+(\S+)$", rules, flags=re.MULTILINE)
    assert len(named) >= 7 and set(named) == {"CONDA_ENV"}

    requirements = tmp_path / "condaenv.requirements.txt"  # what conda writes beside the copied environment file
    requirements.write_text("\n".join(jobs["dependencies"][-1]["pip"]) + "\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-r",
        str(requirements),
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HAVANA_SOURCE": str(ROOT)},
    )
    assert result.returncode == 0 and "Would install havana-" in result.stdout, result.stdout + result.stderr

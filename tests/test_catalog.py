"""The snakemake-workflows catalog conventions that fit a root Snakefile: config/README.md describes every config
section of the schema, .snakemake-workflow-catalog.yml says how to run the workflow, a LICENSE, and rules that
snakefmt leaves unchanged (`snakemake --lint` is checked in test_workflow.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFMT = Path(sys.executable).with_name("snakefmt")


def test_config_readme_describes_every_section_of_the_schema():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    headings = re.findall(r"^### (.+)$", (REPO / "config" / "README.md").read_text(), flags=re.MULTILINE)
    described = {key for heading in headings for key in re.findall(r"`([a-z_]+)`", heading)}
    assert described == set(schema["properties"]), described ^ set(schema["properties"])


def test_catalog_file_says_how_to_run_the_workflow():
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert usage["software-stack-deployment"]["conda"] is True and usage["report"] is True
    assert "--cores" in usage["mandatory-flags"]["flags"] and usage["mandatory-flags"]["desc"]


def test_license_is_mit():
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n")


def test_rules_are_snakefmt_clean():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run(
        [str(SNAKEFMT), "--check", "--diff", *map(str, files)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, (
        "run `snakefmt Snakefile workflow/rules` (settings in pyproject.toml):\n"
        + (result.stdout + result.stderr)[-4000:]
    )

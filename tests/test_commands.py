"""Every snakemake command the project documents works as typed: each one in the README (code blocks and inline
code), in the comments of the Snakefile, environment.yml, the configs and the profiles, and the Makefile's demo command
is run with `-n` from a copy of the workflow, and must plan its jobs with the right profile applied. snakemake's
parser reads a target
typed after --resources/--config/--configfile/--set-resources as one more value; a test shows that failure mode so
the documented forms (target first) stay the ones that work."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
# What a user's checkout has that a dry run reads (no results, no resources: the paper's -n plans `prepare` from
# nothing, and --configfile config/demo.yaml plans the synthetic dataset's rendering).
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles")
PAPER = "snakemake all --cores 8 --resources gpu=2"
DEFAULT_PROFILE_LINE = "Using workflow specific profile profiles/default for setting default command line arguments."


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every distinct `snakemake …` command in the project's documentation and comments; `where`
    lists every file that shows it."""
    found: dict[str, list[str]] = {}

    def add(where: str, text: str) -> None:
        command = " ".join(shlex.split(text, comments=True))
        if command.startswith("snakemake ") and where not in found.setdefault(command, []):
            found[command].append(where)

    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("    snakemake "):
            add("README.md", line)
        for span in re.findall(r"`(snakemake [^`]+)`", line):
            add("README.md", span)
    commented = [
        REPO / "Snakefile",
        REPO / "environment.yml",
        *sorted((REPO / "config").glob("*.yaml")),
        *sorted((REPO / "profiles").glob("*/config.yaml")),
    ]
    for path in commented:
        for line in path.read_text().splitlines():
            match = re.match(r"\s*#\s+(snakemake .*)", line)
            if match:
                add(str(path.relative_to(REPO)), match.group(1))
            for span in re.findall(r"`(snakemake [^`]+)`", line):
                add(str(path.relative_to(REPO)), span)
    makefile = (REPO / "Makefile").read_text()
    demo = re.search(r"^DEMO_SNAKEMAKE := \$\(BIN\)/(snakemake .*?)$", makefile.replace("\\\n", " "), re.MULTILINE)
    add("Makefile", demo.group(1))
    return [(", ".join(wheres), command) for command, wheres in found.items()]


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the workflow's files, as a fresh clone has them; commands run there as typed."""
    root = tmp_path_factory.mktemp("checkout")
    for name in WORKFLOW_FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / name)
    return root


def dry_run(checkout: Path, command: str) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    if "--report" in argv:  # a report reads finished results: dry-run the targets it would report on instead
        index = argv.index("--report")
        del argv[index : index + 2]
    return subprocess.run([str(SNAKEMAKE), *argv[1:], "-n"], cwd=checkout, capture_output=True, text=True, timeout=300)


def test_the_documentation_names_the_commands_users_type():
    commands = {command for _, command in COMMANDS}
    assert PAPER in commands
    assert "snakemake all --cores 2 --configfile config/demo.yaml" in commands
    assert "snakemake all --workflow-profile profiles/slurm" in commands
    assert {w for where, _ in COMMANDS for w in where.split(", ")} >= {
        "README.md",
        "Snakefile",
        "config/demo.yaml",
        "config/config.yaml",
        "Makefile",
    }


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}: {c}" for w, c in COMMANDS])
def test_documented_command_plans_as_typed(checkout, where, command):
    if "--unlock" in shlex.split(command):  # plans nothing: it removes a stale lock, run as typed
        done = subprocess.run(
            shlex.split(command.replace("snakemake", str(SNAKEMAKE), 1)),
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0 and "Unlocked working directory." in done.stdout + done.stderr, where
        return
    result = dry_run(checkout, command)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"{where}: `{command} -n` failed:\n{log[-3000:]}"
    assert "Job stats:" in log, log[-2000:]
    if "--workflow-profile" in command:
        profile = shlex.split(command)[shlex.split(command).index("--workflow-profile") + 1]
        assert f"Using workflow specific profile {profile} " in log
    else:
        assert DEFAULT_PROFILE_LINE in log
    if "--configfile config/demo.yaml" in command:
        assert "rule synthesize:" in log and "market1501" not in log
    if command == PAPER:  # the paper plans every stage, with profiles/default applied (its first line says so)
        assert result.stderr.splitlines()[0] == DEFAULT_PROFILE_LINE
        counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", log, flags=re.MULTILINE)}
        assert counts["train_head"] >= 60 and counts["table3"] == 1
        # the profile's settings reached the run: its printshellcmds prints every job's command (untyped here)
        assert log.count("Shell command: ") >= counts["train_head"] + counts["evaluate"]


def test_a_target_after_resources_is_read_as_a_resource(checkout):
    """The failure mode the documentation steers around: snakemake's parser, not ours."""
    result = dry_run(checkout, "snakemake --cores 8 --resources gpu=2 all")
    assert result.returncode != 0
    assert "dictionary update sequence element" in result.stdout + result.stderr

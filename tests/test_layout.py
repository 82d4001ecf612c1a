"""havana/layout.py and havana/dag/jobs.py are the one declaration of paths and reads: moving a path template moves
every rule and every reader together, each report rule's inputs are exactly what the library reads, each job's config
file holds exactly the sections it reads, and the schema agrees with the dataclasses it documents."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from havana import layout
from havana.cli import main
from havana.config import load_yaml
from havana.dag import jobs
from havana.dag import schema as generated
from havana.data.synthetic import SynthConfig
from havana.errors import HavanaError
from havana.report import figures, model, tables

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config" / "demo.yaml"
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
# Snakemake run in a process whose layout templates were changed first (as an edit of havana/layout.py would).
PATCHED_SNAKEMAKE = """
import json, sys
from havana import layout
layout.RESULTS.update(json.loads(sys.argv[1]))
from snakemake.cli import main
main(sys.argv[2:])
"""
MOVED = {
    "metrics": "{dataset}/scores/{extractor}/{row}-s{seed}.json",
    "head_dir": "{dataset}/trained/{row}/{extractor}/s{seed}",
    "features": "{dataset}/embedded/{extractor}.h5",
}


def dry_run_jobs(output: str) -> dict[str, list[tuple[set[str], set[str]]]]:
    """{rule: [(inputs, outputs) per job]} from a dry run's job blocks."""
    jobs: dict[str, list[tuple[set[str], set[str]]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        fields = {
            key: {path.strip() for path in value.split(",")}
            for key, value in re.findall(r"^\s+(input|output): (.+)$", block, flags=re.MULTILINE)
        }
        jobs.setdefault(head.group(1), []).append((fields.get("input", set()), fields.get("output", set())))
    return jobs


@pytest.fixture(scope="module")
def moved_dry_run(tmp_path_factory) -> dict[str, list[tuple[set[str], set[str]]]]:
    """The demo's dry run with MOVED templates."""
    workdir = tmp_path_factory.mktemp("moved")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PATCHED_SNAKEMAKE,
            json.dumps(MOVED),
            "all",
            "-n",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(DEMO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dry_run_jobs(result.stdout + result.stderr)


def demo_config() -> dict:
    return load_yaml(DEMO)


def test_moving_a_template_moves_every_rule_and_every_reader(moved_dry_run, monkeypatch, tmp_path) -> None:
    for key, template in MOVED.items():
        monkeypatch.setitem(layout.RESULTS, key, template)
    config = demo_config()
    outputs = {path for jobs in moved_dry_run.values() for _, produced in jobs for path in produced}
    assert any("/scores/" in path for path in outputs) and not any("/metrics/" in path for path in outputs)
    assert any("/trained/" in path for path in outputs) and not any("/heads/" in path for path in outputs)
    # Each report rule's inputs are exactly the library's reads, and some job produces every one of them.
    declared = {name: jobs.table_reads(config, name) for name in layout.table_names(config)}
    declared["reproduction_summary"] = jobs.summary_reads(config)
    declared |= {name: jobs.figure_reads(config, name) for name in jobs.figure_names(config)}
    for rule, reads in declared.items():
        [(inputs, _)] = moved_dry_run[rule]
        assert inputs == set(reads) and inputs <= outputs, rule
    # The readers open the moved files: table3 renders from metrics written only at the moved paths.
    root = tmp_path / "run"
    for path in declared["table3"]:
        assert "/scores/" in path
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(
            json.dumps({"plain": {m: 0.5 for m in model.METRICS}, "flip": {m: 0.6 for m in model.METRICS}})
        )
    moved = layout.Layout(str(root / config["results_dir"]), str(root / config["resources_dir"]))
    table = tables.write_table(config, "table3", tmp_path / "table3", moved)
    assert all(cell.mean == 50.0 for row in table.rows for cell in row.cells)


def test_a_missing_metrics_file_fails_the_table_job_with_a_sentence_naming_it(tmp_path, capsys) -> None:
    config = demo_config()
    config["results_dir"] = str(tmp_path / "results")
    reads = jobs.table_reads(config, "table4")
    for path in reads[1:]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"plain": {m: 0.5 for m in model.METRICS}}))
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    prefix = tmp_path / "tables" / "table4"
    assert main(["table", "--config", str(config_path), "--table", "table4", "--out-prefix", str(prefix)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"havana table: error: table table4 needs {reads[0]}, which does not exist;")
    assert error.count("\n") == 1 and "Traceback" not in error
    assert not prefix.parent.exists()


def test_each_job_config_holds_exactly_what_the_job_reads() -> None:
    config = demo_config()

    def subset(job, **wildcards):
        return jobs.config_subset(config, jobs.job_sections(config, job, **wildcards))

    head = subset("train_head", dataset="synthetic", extractor="bot_r18", row="havana", seed=0)
    assert head == {
        "heads": {
            "train": config["heads"]["train"],
            "rows": {"havana": config["heads"]["rows"]["havana"]},
            "beta_by_dataset": {"synthetic": config["heads"]["beta_by_dataset"]["synthetic"]},
        }
    }
    # The evaluation metric is the evaluate job's: changing it reruns evaluations, not head training.
    changed = {**config, "evaluation": {**config["evaluation"], "metric": "euclidean"}}
    assert (
        jobs.config_subset(
            changed, jobs.job_sections(changed, "train_head", dataset="synthetic", extractor="bot_r18", row="havana")
        )
        == head
    )
    assert subset("evaluate") != jobs.config_subset(changed, jobs.job_sections(changed, "evaluate"))
    # Another row's settings do not touch this head's digest.
    other = json.loads(json.dumps(config))
    other["heads"]["rows"]["vnae"]["alpha"] = 0.9
    assert (
        jobs.config_subset(
            other, jobs.job_sections(other, "train_head", dataset="synthetic", extractor="bot_r18", row="havana")
        )
        == head
    )
    assert subset("evaluate") == {"evaluation": config["evaluation"]}
    assert subset("train_extractor", extractor="bot_r34") == {
        "extractors": {"bot_r34": config["extractors"]["bot_r34"]}
    }
    fig8 = subset("figure", name="fig8")
    assert set(fig8["heads"]["rows"]) == set(config["figures"]["fig8"]["rows"])
    assert set(fig8["extractors"]) == {"bot_r18"}


def test_job_config_files_are_content_addressed(tmp_path) -> None:
    config = {**demo_config(), "results_dir": str(tmp_path)}
    first = jobs.write_job_config(config, "evaluate")
    assert jobs.write_job_config(config, "evaluate") == first
    assert yaml.safe_load(Path(first).read_text()) == {"evaluation": config["evaluation"]}
    other = jobs.write_job_config({**config, "evaluation": {"metric": "euclidean"}}, "evaluate")
    assert other != first and Path(first).is_file() and Path(other).is_file()


def test_figure_list_is_the_librarys_and_unknown_figures_are_refused() -> None:
    assert set(SCHEMA["properties"]["figures"]["properties"]) == set(figures.FIGURES)
    config = {**demo_config(), "figures": {"fig10": {}}}
    with pytest.raises(HavanaError, match="figures.fig10 is not a figure this pipeline draws"):
        jobs.figure_names(config)


# ---------------------------------------------------------------- the schema and the dataclasses agree


@pytest.mark.parametrize("keys", list(generated.sections()), ids=[".".join(k) for k in generated.sections()])
def test_the_schema_documents_every_field_of_every_typed_section(keys) -> None:
    """Both directions: the schema's typed nodes hold exactly the dataclass's fields (no more, no fewer), each with
    its type, default and description as generated from the dataclass (`python -m havana.dag.schema` rewrites them)."""
    cls = generated.sections()[keys]
    written = generated.node_at(SCHEMA, keys)
    fields = {generated.config_key(field.name) for field in dataclasses.fields(cls)}
    assert set(written["properties"]) == fields, f"{keys}: {set(written['properties']) ^ fields}"
    assert generated.owned(written)["properties"] == generated.owned(generated.section_schema(cls))["properties"], (
        f"{'.'.join(keys)} differs from its dataclass; run `python -m havana.dag.schema`"
    )
    for name, node in written["properties"].items():
        assert node["description"].strip(), f"{keys}.{name} has no description"
        optional_section = "properties" in node and "null" in node["type"]  # absent means None (see the generator)
        assert "default" in node or optional_section or name in written.get("required", []), f"{keys}.{name}"


def test_a_schema_that_misses_a_field_fails_the_check() -> None:
    """The oracle above can fail: drop a field from a copy of the schema's RowConfig node and compare again."""
    node = copy.deepcopy(generated.node_at(SCHEMA, ("heads", "rows", "*")))
    del node["properties"]["gamma"]
    assert (
        generated.owned(node)["properties"]
        != generated.owned(generated.section_schema(generated.sections()[("heads", "rows", "*")]))["properties"]
    )


def bounds(node: dict) -> list[tuple[str, float, float]]:
    """(key, value just inside, value just outside) for every minimum and maximum the schema gives."""
    found = []
    for name, schema in node["properties"].items():
        step = 1 if schema.get("type") == "integer" else 1e-6
        if "minimum" in schema:
            found.append((name, schema["minimum"], schema["minimum"] - step))
        if "maximum" in schema:
            found.append((name, schema["maximum"], schema["maximum"] + step))
    return found


@pytest.mark.parametrize(
    ("key", "inside", "outside"),
    bounds(SCHEMA["properties"]["datasets"]["additionalProperties"]["properties"]["synth"]),
)
def test_synth_bounds_in_the_schema_are_the_renderers(key, inside, outside) -> None:
    kind = typing.get_type_hints(SynthConfig)[key]
    SynthConfig(**{key: kind(inside)}).validate()
    with pytest.raises(HavanaError):
        SynthConfig(**{key: kind(outside)}).validate()

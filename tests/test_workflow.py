"""The Snakemake workflow: lint-clean, the paper's dry run plans every table cell, the demo's dry run plans every stage
and never inherits paper datasets, a dataset subset is honoured, and a missing archive stops the run in `prepare`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from havana.config import load_yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
PAPER = REPO / "config" / "config.yaml"
DEMO = REPO / "config" / "demo.yaml"
STAGES = ("prepare", "train_extractor", "extract_features", "train_head", "evaluate")


def snakemake(workdir: Path, *args: str, configfile: Path | None = None, config: tuple[str, ...] = ()):
    """Run snakemake on the repository's Snakefile with `workdir` as working directory (its .snakemake, results)."""
    command = [str(SNAKEMAKE), *args, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    if configfile is not None:
        command += ["--configfile", str(configfile)]
    if config:
        command += ["--config", *config]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    table = output[output.index("Job stats:") :]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)}


def planned_outputs(output: str) -> set[str]:
    """Every output file named by the jobs of a (non-quiet) dry run."""
    files = set()
    for match in re.finditer(r"^\s+output: (.+)$", output, flags=re.MULTILINE):
        files.update(path.strip() for path in match.group(1).split(","))
    return files


def expected_metrics(config: dict) -> set[str]:
    """The metrics file of every reproduced cell of every paper table, for every seed (from the config alone)."""
    files = set()
    for name, spec in config["tables"].items():
        if not re.fullmatch(r"table\d+", name):
            continue
        for row in spec["rows"]:
            for column in spec["columns"]:
                dataset = column.get("dataset") or row.get("dataset")
                for seed in config["seeds"]:
                    files.add(
                        f"{config['results_dir']}/{dataset}/metrics/{row['extractor']}/{row['row']}/seed{seed}.json"
                    )
    return files


def test_lint_is_clean_with_the_default_config(tmp_path):
    result = snakemake(tmp_path, "--lint")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_paper_dry_run_plans_every_table_cell_and_figure(tmp_path):
    result = snakemake(tmp_path, "all", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    counts = job_counts(log)
    assert counts["train_head"] >= 60
    assert all(counts.get(stage, 0) > 0 for stage in STAGES)
    assert all(counts.get(name) == 1 for name in ("table2", "table3", "table4", "table5", "table6", "fig5", "fig9"))
    paper = load_yaml(PAPER)
    assert expected_metrics(paper) <= planned_outputs(log)
    heads = [path for path in planned_outputs(log) if path.endswith("/head.pt")]  # one job per row trains every seed
    assert len(heads) == counts["train_head"] * len(paper["seeds"])


def test_demo_dry_run_plans_every_stage_and_never_touches_paper_datasets(tmp_path):
    result = snakemake(tmp_path, "all", "-n", configfile=DEMO)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    counts = job_counts(log)
    assert all(counts.get(stage, 0) > 0 for stage in ("synthesize", *STAGES))
    outputs = planned_outputs(log)
    assert outputs and all(path.startswith(("results/demo/", "resources/demo/")) for path in outputs)
    assert not any(name in path for path in outputs for name in ("market1501", "dukemtmc", "msmt17"))
    demo = load_yaml(DEMO)
    assert expected_metrics(demo) <= outputs


def test_active_datasets_selects_a_subset(tmp_path):
    result = snakemake(tmp_path, "all", "-n", config=("active_datasets=[msmt17]",))
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = planned_outputs(result.stdout + result.stderr)
    assert any("/msmt17/" in path for path in outputs)
    assert not any("/market1501/" in path or "/dukemtmc/" in path for path in outputs)


def test_job_configs_carry_overrides_and_are_content_addressed(tmp_path):
    configs = tmp_path / "results" / "configs"
    assert snakemake(tmp_path, "table3", "-n", "--quiet", config=("seeds=[4]",)).returncode == 0
    first = {path.name: path.stat().st_mtime_ns for path in configs.iterdir()}
    assert any(yaml.safe_load((configs / name).read_text()).get("seeds") == [4] for name in first)
    assert snakemake(tmp_path, "table3", "-n", "--quiet", config=("seeds=[4]",)).returncode == 0
    assert {path.name: path.stat().st_mtime_ns for path in configs.iterdir()} == first  # same settings: untouched
    assert snakemake(tmp_path, "table3", "-n", "--quiet", config=("seeds=[5]",)).returncode == 0
    second = {path.name for path in configs.iterdir()} - set(first)
    # Another invocation's settings get files of their own, and only jobs that read `seeds` (tables, summary, figures;
    # not the training and evaluation jobs) get a new one.
    assert second and all(yaml.safe_load((configs / name).read_text())["seeds"] == [5] for name in second)


def test_a_table_naming_an_undefined_head_row_fails_at_parse_time(tmp_path):
    config = load_yaml(DEMO)
    config["tables"]["table3"]["rows"][1]["row"] = "no_such_row"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "all", "-n", configfile=broken)
    assert result.returncode != 0
    assert "uses row 'no_such_row', which is not in heads.rows" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_missing_archive_fails_in_prepare_with_its_message(tmp_path):
    result = snakemake(tmp_path, "all", "--cores", "1", config=("active_datasets=[market1501]", "tracking_uri=null"))
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule prepare" in log
    assert re.findall(r"Error in rule (\w+)", log) == ["prepare"]
    assert "archive resources/archives/Market-1501-v15.09.15.zip does not exist" in log
    assert not (tmp_path / "resources" / "market1501" / "manifest.csv").exists()


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_profiles_are_valid_yaml_with_the_gpu_resource_story(profile):
    settings = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    if profile == "default":
        assert "gpu=1" in settings["resources"] and "params" in settings["rerun-triggers"]
    else:
        assert settings["executor"] == "slurm"
        assert {"train_extractor", "train_head", "evaluate"} <= set(settings["set-resources"])
        assert all("runtime" in r and "mem_mb" in r for r in settings["set-resources"].values() if "cpus_per_task" in r)


def test_slurm_profile_plans_the_demo_with_the_executor_plugin(tmp_path):
    result = snakemake(tmp_path, "all", "-n", "--workflow-profile", str(REPO / "profiles" / "slurm"), configfile=DEMO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout + result.stderr)["train_head"] > 0


def test_paper_dry_run_plans_table6_views_without_re_on_the_re_trained_extractor(tmp_path):
    """Table 6 as Sect. 4.4: the views-without-RE features are extracted by bot_r50's own model.pt (no extractor of
    their own is trained), and HAVANA is trained on them; the retrained-without-RE extractor stays an extra row."""
    result = snakemake(tmp_path, "table6", "-n", config=("active_datasets=[market1501]",))
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    outputs = planned_outputs(log)
    assert "results/market1501/features/bot_r50_views_nore.h5" in outputs
    assert all(f"results/market1501/metrics/bot_r50_views_nore/havana/seed{seed}.json" in outputs for seed in (0, 1, 2))
    assert "results/market1501/extractors/bot_r50/model.pt" in outputs
    assert "results/market1501/extractors/bot_r50_views_nore/model.pt" not in outputs
    block = re.search(
        r"rule extract_features:\n(?:\s+\S.*\n)*?\s+output: results/market1501/features/bot_r50_views_nore\.h5", log
    )
    assert (
        block
        and "input: resources/market1501/manifest.csv, results/market1501/extractors/bot_r50/model.pt" in block.group(0)
    )
    assert job_counts(log)["train_extractor"] == 2  # bot_r50 and the extra bot_r50_nore


def rule_outputs(log: str, rule: str) -> set[str]:
    """The output files of every job of `rule` in a (non-quiet) dry run."""
    files = set()
    for block in re.finditer(rf"^(?:local)?rule {rule}:\n((?:[ \t]+\S.*\n)+)", log, flags=re.MULTILINE):
        found = re.search(r"^\s+output: (.+)$", block.group(1), flags=re.MULTILINE)
        files.update(path.strip() for path in found.group(1).split(","))
    return files


def test_demo_imports_a_bot_checkpoint_and_a_feature_file_without_training_or_extracting_them(tmp_path):
    """The demo's bot_r18_imported model comes from BoT's layout (exported from bot_r18) and bot_r18_features from
    an .npz (exported from bot_r18's features): no train_extractor for either, no extract_features for the second."""
    result = snakemake(tmp_path, "table2", "-n", configfile=DEMO)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    model = "results/demo/synthetic/extractors/{}/model.pt".format
    features = "results/demo/synthetic/features/{}.h5".format
    assert model("bot_r18_imported") in rule_outputs(log, "import_extractor")
    assert rule_outputs(log, "export_extractor") == {"results/demo/synthetic/exports/bot_r18.bot.pth"}
    assert features("bot_r18_features") in rule_outputs(log, "import_features")
    assert rule_outputs(log, "export_features") == {"results/demo/synthetic/exports/bot_r18.npz"}
    trained, extracted = rule_outputs(log, "train_extractor"), rule_outputs(log, "extract_features")
    assert model("bot_r18") in trained and features("bot_r18_imported") in extracted  # the oracle sees these rules
    assert not {model("bot_r18_imported"), model("bot_r18_features")} & trained
    assert features("bot_r18_features") not in extracted
    assert not any("bot_r18_features/model.pt" in path for path in planned_outputs(log))

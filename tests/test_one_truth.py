"""One truth per fact: settings that used to be resolved in several places, each of which once disagreed.

- a row's beta for a dataset: training, `havana plan` and Fig. 8 resolve it through `models.head.resolve_row`, so a
  dataset missing from `heads.beta_by_dataset` is the same one-sentence error in all three (it used to fail training,
  be planned at beta 1 and plotted at beta 1);
- the output-collision guard covers every table format the layout writes (it used to miss `.html`);
- `evaluation.max_rank` has one bound, where R10 is reported (it was >= 1 in the dataclass, >= 10 elsewhere).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from test_train_head import fix_query_gallery, synthetic_features

from havana import layout
from havana.cli import main
from havana.config import from_mapping, load_yaml, override
from havana.dag.plan import make_plan
from havana.data.features import write_features
from havana.errors import HavanaError
from havana.evaluation.rank import REPORTED_RANKS, EvaluationConfig
from havana.report import figures

DEMO = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
MISSING = "config has no 'synthetic' under heads.beta_by_dataset"


def demo_without_synthetic_beta() -> dict:
    config = copy.deepcopy(load_yaml(DEMO))
    del config["heads"]["beta_by_dataset"]["synthetic"]
    assert config["heads"]["rows"]["havana"]["beta"] is None  # the row leaves beta to the dataset
    return config


def test_a_dataset_missing_from_beta_by_dataset_fails_alike_in_training_plan_and_figures(tmp_path, capsys):
    config = demo_without_synthetic_beta()
    features = fix_query_gallery(synthetic_features(train_ids=8, test_ids=4, per_id=4))
    write_features(tmp_path / "toy.h5", features.splits, {**features.attrs, "dataset": "synthetic"})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    argv = [
        "train-head",
        "--features",
        str(tmp_path / "toy.h5"),
        "--row",
        "havana",
        "--config",
        str(tmp_path / "cfg.yaml"),
    ]
    assert main([*argv, "--out", str(tmp_path / "out"), "--epochs", "1"]) == 2
    assert MISSING in capsys.readouterr().err
    assert not (tmp_path / "out" / "head.pt").exists()

    with pytest.raises(HavanaError, match=MISSING):
        make_plan(config)

    settings = figures.Fig8Config(**{**config["figures"]["fig8"], "rows": ["havana"]})
    with pytest.raises(HavanaError, match=MISSING):
        figures.fig8_grid(config, layout.Layout.of(config), settings, "synthetic")


@pytest.mark.parametrize("extension", layout.TABLE_FORMATS)
def test_the_collision_guard_covers_every_table_format(tmp_path, capsys, extension):
    config = tmp_path / "cfg.yaml"
    config.write_text(DEMO.read_text())
    prefix = tmp_path / "table3"
    shadow = tmp_path / f"table3.{extension}"
    config.rename(shadow)  # the config is read from the very file the table would write
    assert main(["table", "--config", str(shadow), "--table", "table3", "--out-prefix", str(prefix)]) == 2
    assert "would overwrite its own input" in capsys.readouterr().err
    assert shadow.read_text() == DEMO.read_text()


def test_max_rank_has_one_bound_where_r10_is_reported():
    assert max(REPORTED_RANKS) == 10
    assert from_mapping(EvaluationConfig, {"max_rank": 10}, "evaluation").max_rank == 10
    for where in ("config", "override"):
        with pytest.raises(HavanaError, match="max_rank=9 is out of range; it must be at least 10"):
            if where == "config":
                from_mapping(EvaluationConfig, {"max_rank": 9}, "evaluation")
            else:
                override(EvaluationConfig(), {"max_rank": 9}, "evaluation")
    schema = yaml.safe_load((DEMO.parents[1] / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["evaluation"]["properties"]["max_rank"]["minimum"] == max(REPORTED_RANKS)


def test_both_configs_take_their_rows_from_one_file():
    """config.yaml and demo.yaml define no row of their own: each row the demo trains is the paper's, and a config's own
    heads.rows entry would override the shared one key by key."""
    from havana.config import with_defaults

    paper, demo = load_yaml(DEMO.with_name("config.yaml")), load_yaml(DEMO)
    shared = yaml.safe_load(DEMO.with_name("rows.yaml").read_text())["heads"]["rows"]
    assert paper["heads"]["rows"] == demo["heads"]["rows"] == shared and "defaults" not in demo
    for raw in (DEMO, DEMO.with_name("config.yaml")):
        assert "rows" not in yaml.safe_load(raw.read_text())["heads"]
    edited = with_defaults({"defaults": ["rows.yaml"], "heads": {"rows": {"havana": {"gamma": 0.3}}}}, DEMO.parent)
    assert edited["heads"]["rows"]["havana"] == {**shared["havana"], "gamma": 0.3}
    with pytest.raises(HavanaError, match="config 'defaults' must be a list of YAML file names"):
        with_defaults({"defaults": "rows.yaml"}, DEMO.parent)


def test_every_figure_has_one_title_and_one_drawing_function():
    assert set(figures.FIGURES) == set(layout.FIGURE_TITLES)

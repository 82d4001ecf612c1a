"""Tables and the reproduction summary rendered from fabricated metrics JSONs; numbers checked against hand-computed
values."""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from havana.cli import main
from havana.errors import HavanaError
from havana.layout import Layout
from havana.report import model, summary, tables
from havana.report.model import Cell

SEEDS = [0, 1, 2]
LITERATURE = [
    {"label": "MGN [40] (2018 ACMM)", "group": "non-generative", "values": [86.9, 95.7, None]},
    {"label": "DGNet [50] (2019 CVPR)", "group": "generative", "values": [86.0, 94.8, 52.3]},
]


def make_config() -> dict:
    """A config with one Table-2-like table: Market mAP/R1 and MSMT17 mAP (MSMT17 is not an active dataset)."""
    return {
        "seeds": SEEDS,
        "active_datasets": ["market1501"],
        "extractors": {"bot_r50": {"arch": "resnet50", "train": {"epochs": 120}}},
        "heads": {"train": {"epochs": 300}, "rows": {"havana": {"alpha": 0.2}}},
        "tables": {
            "table2": {
                "caption": "Comparison with the state of the art.",
                "columns": [
                    {"metric": "mAP", "dataset": "market1501"},
                    {"metric": "R1", "dataset": "market1501"},
                    {"metric": "mAP", "dataset": "msmt17"},
                ],
                "rows": [
                    {"label": "Baseline", "extractor": "bot_r50", "row": "baseline", "paper": [85.8, 94.2, 48.2]},
                    {"label": "HAVANA", "extractor": "bot_r50", "row": "havana", "paper": [86.9, 94.4, 52.3]},
                    {
                        "label": "HAVANA †",
                        "extractor": "bot_r50",
                        "row": "havana",
                        "flip": True,
                        "paper": [87.4, None, 53.3],
                    },
                ],
                "literature": LITERATURE,
            },
            "table3": {
                "caption": "Per-row datasets.",
                "columns": [{"metric": "mAP"}, {"metric": "R5"}],
                "rows": [
                    {
                        "label": "V+J+H+C",
                        "dataset": "market1501",
                        "extractor": "bot_r50",
                        "row": "havana",
                        "paper": [86.9, 98.3],
                    }
                ],
            },
        },
        "summary": {"tolerance": 0.5},
    }


def write_metrics(results: Path, dataset: str, head: str, seed: int, plain: dict, flip: dict) -> None:
    path = results / dataset / "metrics" / "bot_r50" / head / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"plain": plain, "flip": flip, "provenance": {}}))


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """Market-1501 metrics of every seed (MSMT17 is not active, so none)."""
    root = tmp_path / "results"
    baseline_map = [0.861, 0.865, 0.872]
    for seed, value in zip(SEEDS, baseline_map):
        write_metrics(
            root,
            "market1501",
            "baseline",
            seed,
            {"mAP": value, "R1": 0.94, "R5": 0.98},
            {"mAP": value + 0.01, "R1": 0.95, "R5": 0.98},
        )
    for seed, (plain, flip) in enumerate([(0.870, 0.880), (0.874, 0.870), (0.872, 0.875)]):
        write_metrics(
            root,
            "market1501",
            "havana",
            seed,
            {"mAP": plain, "R1": 0.945, "R5": 0.983},
            {"mAP": flip, "R1": 0.95, "R5": 0.985},
        )
    (root / "market1501" / "heads" / "bot_r50" / "havana" / "seed0").mkdir(parents=True)
    (root / "market1501" / "heads" / "bot_r50" / "havana" / "seed0" / "mlflow_run_id").write_text("abc123\n")
    return root


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_table_numbers_in_all_three_formats(tmp_path: Path, results: Path) -> None:
    config = make_config()
    tables.write_table(config, "table2", tmp_path / "out" / "table2", Layout(results=str(results)))
    md = (tmp_path / "out" / "table2.md").read_text()
    tex = (tmp_path / "out" / "table2.tex").read_text()
    rows = {row["method"]: row for row in read_csv(tmp_path / "out" / "table2.csv")}

    # Baseline mAP: 86.1, 86.5, 87.2 -> mean 86.6; deviations -.5 -.1 .6 -> var .62/2 = .31 -> std .557 -> 0.6;
    # delta 86.6 - 85.8 = +0.8.
    assert "| Baseline | 86.6 ± 0.6 | 85.8 | +0.8 | 94.0 ± 0.0 | 94.2 | -0.2 | n/a | 48.2 | n/a |" in md
    assert rows["Baseline"]["market1501/mAP/mean"] == "86.6"
    assert rows["Baseline"]["market1501/mAP/std"] == "0.6"
    assert rows["Baseline"]["market1501/mAP/seeds"] == "3/3"
    assert rows["Baseline"]["market1501/mAP/delta"] == "+0.8"
    assert rows["Baseline"]["msmt17/mAP/mean"] == "" and rows["Baseline"]["msmt17/mAP/seeds"] == "0/3"
    assert r"Baseline & 86.6 $\pm$ 0.6 & 85.8 & +0.8 & 94.0 $\pm$ 0.0 & 94.2 & -0.2 & n/a & 48.2 & n/a \\" in tex

    # HAVANA plain mAP: 87.0, 87.4, 87.2 -> mean 87.2, deviations -.2 .2 0 -> var .08/2 -> std 0.2; delta +0.3.
    assert "| HAVANA | 87.2 ± 0.2 | 86.9 | +0.3 |" in md
    assert rows["HAVANA"]["market1501/mAP/seeds"] == "3/3" and rows["HAVANA"]["row"] == "havana"
    # HAVANA flip reads the "flip" block: 88.0, 87.0, 87.5 -> 87.5 ± 0.5; delta 87.5 - 87.4 = +0.1. R1: no paper value.
    assert "| HAVANA † | 87.5 ± 0.5 | 87.4 | +0.1 | 95.0 ± 0.0 | — | — | n/a | 53.3 | n/a |" in md
    assert rows["HAVANA †"]["flip"] == "true" and rows["HAVANA †"]["market1501/R1/paper"] == ""
    assert r"HAVANA $^\dagger$ & 87.5 $\pm$ 0.5 & 87.4" in tex

    # Literature rows verbatim, under their group headings, in the paper column only.
    assert "| *non-generative* |" in md and "| *generative* |" in md
    assert "| MGN [40] (2018 ACMM) |  | 86.9 |  |  | 95.7 |  |  | — |  |" in md
    assert rows["DGNet [50] (2019 CVPR)"]["msmt17/mAP/paper"] == "52.3"
    assert rows["DGNet [50] (2019 CVPR)"]["msmt17/mAP/mean"] == ""
    assert rows["MGN [40] (2018 ACMM)"]["group"] == "non-generative"
    assert md.index("MGN [40]") < md.index("DGNet [50]") < md.index("| Baseline |")
    assert r"\multicolumn{10}{l}{\textit{non-generative}}" in tex

    # The note says what was run.
    assert "Reproduced on Market-1501 (not run here: MSMT17, not in active_datasets)" in md
    assert "bot_r50 (120 epochs)" in md and "havana (300 epochs each)" in md
    assert "seeds 0, 1, 2 (n=3)" in md and "flip test (plain and flipped features averaged) on HAVANA †" in md
    assert (tmp_path / "out" / "table2.md.provenance.yaml").is_file()


def test_dataset_column_when_columns_take_the_rows_dataset(tmp_path: Path, results: Path) -> None:
    tables.write_table(make_config(), "table3", tmp_path / "table3", Layout(results=str(results)))
    md = (tmp_path / "table3.md").read_text()
    # mAP 87.0, 87.4, 87.2 -> 87.2 ± 0.2; R5 98.3 thrice -> 98.3 ± 0.0, delta +0.0 (never -0.0).
    assert "| V+J+H+C | Market-1501 | 87.2 ± 0.2 | 86.9 | +0.3 | 98.3 ± 0.0 | 98.3 | +0.0 |" in md
    assert read_csv(tmp_path / "table3.csv")[0]["dataset"] == "market1501"
    assert "Method & Dataset &" in (tmp_path / "table3.tex").read_text()


def test_a_missing_metrics_file_is_an_error_naming_it(tmp_path: Path, results: Path) -> None:
    missing = results / "market1501" / "metrics" / "bot_r50" / "havana" / "seed2.json"
    missing.unlink()
    with pytest.raises(HavanaError, match=f"table table2 needs {missing}, which does not exist"):
        tables.write_table(make_config(), "table2", tmp_path / "t2", Layout(results=str(results)))
    assert not list(tmp_path.glob("t2*"))


def test_bad_table_configs_are_user_errors() -> None:
    config = make_config()
    config["tables"]["table2"]["rows"][0]["paper"] = [1.0]
    with pytest.raises(HavanaError, match="3 columns"):
        model.table_spec(config, "table2")
    config = make_config()
    config["tables"]["table2"]["rows"][1]["row"] = "no_such_row"
    with pytest.raises(HavanaError, match="no_such_row"):
        model.table_spec(config, "table2")
    config = make_config()
    config["tables"]["table2"]["columns"][0]["metric"] = "Rank1"
    with pytest.raises(HavanaError, match="Rank1"):
        model.table_spec(config, "table2")
    with pytest.raises(HavanaError, match="table9"):
        model.table_spec(make_config(), "table9")


@pytest.mark.parametrize(
    ("values", "paper", "expected"),
    [
        ((86.9, 86.9, 86.9), 86.9, model.REPRODUCED),  # no spread: the interval is the point 86.9
        ((86.8, 87.0, 86.9), 86.9, model.REPRODUCED),  # 86.9 ± 2.920 · 0.1 / √3 = [86.73, 87.07] ⊂ [86.4, 87.4]
        ((86.0, 87.0), 86.9, model.INCONCLUSIVE),  # 86.5 ± 6.314 · 0.707 / √2 = ± 3.16: two noisy seeds cannot tell
        ((80.0, 90.0), 86.9, model.INCONCLUSIVE),  # noise makes a pass harder, not easier
        ((86.4,), 86.9, model.INCONCLUSIVE),  # one seed: no spread estimate
        ((88.0, 88.2), 86.9, model.NOT_REPRODUCED),  # 88.1 ± 6.314 · 0.141 / √2 = [87.47, 88.73], above 87.4
        ((84.0, 84.1, 84.2), 86.9, model.NOT_REPRODUCED),  # [83.93, 84.27], below 86.4
        ((), 86.9, model.NOT_RUN),
    ],
)
def test_verdicts_on_hand_built_cells(values, paper, expected) -> None:
    assert model.verdict(Cell(values=values, expected=3, paper=paper), tolerance=0.5) == expected
    if values:  # any reason not to judge wins over the numbers
        assert model.verdict(Cell(values=values, expected=3, paper=paper), 0.5, "synthetic") == model.NOT_JUDGED


def test_t_quantiles_are_scipys() -> None:
    from scipy.stats import t

    assert model.T95 == pytest.approx([t.ppf(0.95, df) for df in range(1, 31)], abs=5e-5)
    assert model.Z95 == pytest.approx(1.644854, abs=5e-5)


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_a_cell_one_tolerance_away_passes_at_most_5_percent_of_the_time(seeds) -> None:
    """The rule's stated false-pass rate, by simulation: the true mean sits exactly `tolerance` from the paper."""
    rng = np.random.default_rng(seeds)
    trials = 20000
    passed = sum(
        model.verdict(Cell(values=tuple(87.9 + rng.normal(0.0, 0.4, seeds)), expected=seeds, paper=86.9), 1.0)
        == model.REPRODUCED
        for _ in range(trials)
    )
    assert passed / trials <= 0.05 + 3 * (0.05 * 0.95 / trials) ** 0.5
    steady = sum(  # and a true match with modest noise passes often with 5 seeds (the test can pass at all)
        model.verdict(Cell(values=tuple(86.9 + rng.normal(0.0, 0.4, 5)), expected=5, paper=86.9), 1.0)
        == model.REPRODUCED
        for _ in range(2000)
    )
    assert steady / 2000 > 0.8


def test_only_cells_on_the_papers_dataset_and_backbone_are_judged(tmp_path: Path) -> None:
    config = make_config()
    config["datasets"] = {"market1501": {}, "synthetic": {}}
    config["active_datasets"] = ["market1501", "synthetic"]
    config["extractors"]["bot_r18"] = {"arch": "resnet18"}
    config["tables"] = {
        "table3": {
            "caption": "c",
            "columns": [{"metric": "mAP"}],
            "rows": [
                {"label": ds + "/" + ex, "dataset": ds, "extractor": ex, "row": "baseline", "paper": [86.0]}
                for ds in ("market1501", "synthetic")
                for ex in ("bot_r50", "bot_r18")
            ],
        }
    }
    config["summary"] = {"tolerance": 1.0, "tables": ["table3"]}
    root = tmp_path / "results"
    for ds in ("market1501", "synthetic"):
        for ex in ("bot_r50", "bot_r18"):
            for seed in SEEDS:
                path = root / ds / "metrics" / ex / "baseline" / f"seed{seed}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                block = {m: 0.86 for m in model.METRICS}
                path.write_text(json.dumps({"plain": block, "flip": block}))
    verdicts = {item.label: item for item in summary.write_summary(config, tmp_path / "s", Layout(results=str(root)))}
    assert verdicts["market1501/bot_r50"].verdict == model.REPRODUCED and not verdicts["market1501/bot_r50"].reason
    assert verdicts["synthetic/bot_r50"].verdict == model.NOT_JUDGED
    assert verdicts["synthetic/bot_r50"].reason.startswith("synthetic dataset: shape check only")
    assert (
        verdicts["market1501/bot_r18"].verdict == model.NOT_JUDGED
        and "resnet18" in verdicts["market1501/bot_r18"].reason
    )
    assert "1 reproduced, 0 not reproduced, 0 inconclusive, 3 not judged" in (tmp_path / "s.md").read_text()


def test_summary_counts_rule_and_runs(tmp_path: Path, results: Path) -> None:
    verdicts = summary.write_summary(make_config(), tmp_path / "summary", Layout(results=str(results)))
    # table2 cells with a paper value: 3 + 3 + 2 = 8; table3: 2. 90% intervals over 3 seeds (t = 2.920) against
    # paper ± 0.5: baseline mAP 86.6 ± 0.94 vs [85.3, 86.3] inconclusive; R1 94.0 ± 0 vs [93.7, 94.7] reproduced;
    # havana mAP 87.2 ± 0.34 vs [86.4, 87.4] inconclusive; R1 94.5 ± 0 reproduced; flip mAP 87.5 ± 0.84 inconclusive;
    # table3 mAP inconclusive, R5 reproduced. MSMT17 cells (3): not run.
    assert model.counts(verdicts) == {
        "reproduced": 3,
        "not reproduced": 0,
        "inconclusive": 4,
        "not judged": 0,
        "not run": 3,
        "with paper value": 10,
    }
    md = (tmp_path / "summary.md").read_text()
    assert md.splitlines()[2] == (
        "**10 cells with a paper value: 3 reproduced, 0 not reproduced, 4 inconclusive, 0 not judged, 3 not run.**"
    )
    assert "90% t-interval of its mean over seeds lies inside paper ± 0.5" in md
    assert "| table2 | Baseline | Market-1501 mAP | 86.6 ± 0.6 | 85.8 | +0.8 | inconclusive | — |" in md
    assert "| table3 | V+J+H+C | Market-1501 mAP | 87.2 ± 0.2 | 86.9 | +0.3 | inconclusive | abc123 |" in md
    rows = read_csv(tmp_path / "summary.csv")
    assert [row["verdict"] for row in rows].count("not run") == 3
    assert (tmp_path / "summary.tex").read_text().count(r"\\") == 11  # heading + 10 cells


def test_cli_writes_tables_and_rejects_unknown_table(tmp_path: Path, results: Path, capsys) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(make_config(), allow_unicode=True))
    prefix = tmp_path / "tables" / "table2"
    assert (
        main(
            [
                "table",
                "--config",
                str(config_path),
                "--table",
                "table2",
                "--results-dir",
                str(results),
                "--out-prefix",
                str(prefix),
            ]
        )
        == 0
    )
    assert all((prefix.parent / f"table2.{ext}").is_file() for ext in ("md", "csv", "tex", "html"))
    assert "6/9 reproduced cells run" in capsys.readouterr().out
    assert (
        main(
            [
                "summary",
                "--config",
                str(config_path),
                "--results-dir",
                str(results),
                "--out-prefix",
                str(tmp_path / "tables" / "summary"),
            ]
        )
        == 0
    )
    assert "3 reproduced, 0 not reproduced, 4 inconclusive, 0 not judged, 3 not run" in capsys.readouterr().out
    assert (
        main(
            [
                "table",
                "--config",
                str(config_path),
                "--table",
                "table7",
                "--results-dir",
                str(results),
                "--out-prefix",
                str(tmp_path / "tables" / "table7"),
            ]
        )
        == 2
    )
    assert "no 'table7' under tables" in capsys.readouterr().err
    assert not list((tmp_path / "tables").glob("table7*"))


class TableCells(HTMLParser):
    """Every <table>'s rows as lists of (text, class) cells, from an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str]]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell, self.cls = [], dict(attrs).get("class", "")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append(("".join(self.cell).strip(), self.cls))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def html_tables(text: str) -> list[list[list[tuple[str, str]]]]:
    parser = TableCells()
    parser.feed(text)
    return parser.tables


def test_html_table_has_the_papers_layout_and_deltas_coloured_by_verdict(tmp_path: Path, results: Path) -> None:
    tables.write_table(make_config(), "table2", tmp_path / "table2", Layout(results=str(results)))
    page = (tmp_path / "table2.html").read_text()
    assert (
        page.startswith("<!DOCTYPE html>")
        and "<caption>Table 2. Comparison with the state of the art.</caption>" in page
    )
    [rows] = html_tables(page)
    assert [text for text, _ in rows[0]] == ["Method", "Market-1501 mAP", "Market-1501 R-1", "MSMT17 mAP"]
    assert [text for text, _ in rows[1]] == ["ours", "paper", "Δ"] * 3
    by_label = {row[0][0]: row for row in rows[2:]}
    # The same numbers as the Markdown; Δ coloured as the summary judges: baseline mAP not reproduced, R1 reproduced,
    # MSMT17 not run; a cell without a paper value has no verdict colour.
    assert [text for text, _ in by_label["Baseline"]] == [
        "Baseline",
        "86.6 ± 0.6",
        "85.8",
        "+0.8",
        "94.0 ± 0.0",
        "94.2",
        "-0.2",
        "n/a",
        "48.2",
        "n/a",
    ]
    assert [cls.split()[-1] for _, cls in by_label["Baseline"][3::3]] == ["unsure", "ok", "missing"]
    assert by_label["HAVANA †"][6] == ("—", "num")
    assert by_label["MGN [40] (2018 ACMM)"][2] == ("86.9", "num paper")
    assert [row[0][0] for row in rows[2:] if len(row) == 1] == [
        "non-generative",
        "generative",
        "Reproduced by this pipeline",
    ]

    summary.write_summary(make_config(), tmp_path / "summary", Layout(results=str(results)))
    [judged] = html_tables((tmp_path / "summary.html").read_text())
    assert len(judged) == 1 + 10 and [text for text, _ in judged[0]] == model.HEADINGS
    verdicts = [row[6] for row in judged[1:]]
    assert verdicts.count(("not run", "missing")) == 3 and verdicts.count(("inconclusive", "unsure")) == 4


def test_note_names_imports_and_heads_trained_without_augmentation(tmp_path: Path, results: Path) -> None:
    config = make_config()
    config["extractors"]["bot_r50"] = {"features": "elsewhere/bot.npz"}
    for seed in SEEDS:  # the evaluate job records the feature file's attributes in the metrics' provenance
        path = results / "market1501" / "metrics" / "bot_r50" / "havana" / f"seed{seed}.json"
        payload = json.loads(path.read_text())
        payload["provenance"] = {"config": {"attrs": {"views": 1}}}
        path.write_text(json.dumps(payload))
    built = tables.write_table(config, "table3", tmp_path / "table3", Layout(str(results)))
    assert "bot_r50 (features imported from elsewhere/bot.npz)" in built.note
    assert "heads on bot_r50 saw no augmentation (one train view per image in the feature file)" in built.note
    config["extractors"]["bot_r50"] = {"arch": "resnet50", "import": {"format": "bot", "checkpoint": "bot.pth"}}
    assert "bot_r50 (imported bot checkpoint, not trained here)" in model.table_note(
        config, model.table_spec(config, "table3"), SEEDS, ["market1501"]
    )
    assert "no augmentation" not in model.table_note(config, model.table_spec(config, "table3"), SEEDS, ["market1501"])


def test_rows_show_their_difference_to_the_row_they_build_on_with_a_bootstrap_interval(tmp_path: Path) -> None:
    """Table 3's pairs: each row's difference to its base row in every format, equal to the bootstrap of the kept
    per-query scores; a clear gain is resolved (bold), a tie is not; mINP and files without per-query scores: n/a."""
    from havana.report.bootstrap import cell_difference

    config = make_config()
    config["heads"]["rows"]["vnae"] = {"alpha": 0.2}
    config["tables"]["table3"] = {
        "caption": "Components.",
        "columns": [{"metric": "mAP"}, {"metric": "R1"}, {"metric": "mINP"}],
        "rows": [
            {"label": "baseline", "dataset": "market1501", "extractor": "bot_r50", "row": "baseline"},
            {"label": "V", "dataset": "market1501", "extractor": "bot_r50", "row": "vnae", "base": "baseline"},
            {"label": "V+J+H+C", "dataset": "market1501", "extractor": "bot_r50", "row": "havana", "base": "V"},
        ],
    }
    rng = np.random.default_rng(0)
    root = tmp_path / "results"
    base_ap = rng.uniform(0.3, 0.9, size=60)
    blocks = {}
    for head, shift in (("baseline", 0.0), ("vnae", 0.05), ("havana", 0.05)):
        for seed in SEEDS:
            ap = np.clip(base_ap + shift + rng.normal(0, 0.01, size=60), 0, 1).round(6)
            first = np.where(ap > 0.5, 0, 3)
            plain = {
                "mAP": float(ap.mean()),
                "R1": float(np.mean(first < 1)),
                "mINP": 0.5,
                "per_query": {"index": list(range(60)), "ap": ap.tolist(), "first_match": first.tolist()},
            }
            blocks.setdefault(head, {})[seed] = plain
            write_metrics(root, "market1501", head, seed, plain, plain)
    tables.write_table(config, "table3", tmp_path / "table3", Layout(results=str(root)))
    rows = {row["method"]: row for row in read_csv(tmp_path / "table3.csv")}
    assert rows["V"]["base"] == "baseline" and rows["baseline"]["base"] == ""
    gain = cell_difference(blocks["vnae"], blocks["baseline"], "mAP", "V")
    tie = cell_difference(blocks["havana"], blocks["vnae"], "mAP", "V+J+H+C")
    assert gain.resolved and not tie.resolved
    assert rows["V"]["mAP/vs_base"] == model.fmt(gain.estimate, signed=True) == "+5.0"
    assert (rows["V"]["mAP/vs_base_low"], rows["V"]["mAP/vs_base_high"]) == (
        model.fmt(gain.low, signed=True),
        model.fmt(gain.high, signed=True),
    )
    assert rows["V"]["mAP/vs_base_resolved"] == "true" and rows["V+J+H+C"]["mAP/vs_base_resolved"] == "false"
    means = {head: np.mean([100 * b["mAP"] for b in blocks[head].values()]) for head in blocks}
    assert gain.estimate == pytest.approx(means["vnae"] - means["baseline"])  # the difference of the cells' means
    assert rows["V"]["mINP/vs_base"] == "" and rows["baseline"]["mAP/vs_base"] == ""
    md = (tmp_path / "table3.md").read_text()
    assert f"**{model.difference_text(gain)}**" in md and f"| {model.difference_text(tie)} |" in md
    assert "V − baseline; V+J+H+C − V" in md
    assert rf"\textbf{{{model.difference_text(gain)}}}" in (tmp_path / "table3.tex").read_text()
    [html_rows] = html_tables((tmp_path / "table3.html").read_text())
    assert [text for text, _ in html_rows[1]] == ["ours", "paper", "Δ", "vs base"] * 3
    v_row = next(row for row in html_rows[2:] if row[0][0].startswith("V vs"))
    assert v_row[5] == (model.difference_text(gain), "num resolved") and v_row[13] == ("n/a", "num")  # after Dataset

    for seed in SEEDS:  # metrics written before per-query scores were kept: no interval, the table still renders
        write_metrics(root, "market1501", "vnae", seed, {"mAP": 0.5, "R1": 0.5, "mINP": 0.5}, {})
    tables.write_table(config, "table3", tmp_path / "old", Layout(results=str(root)))
    assert {row["method"]: row for row in read_csv(tmp_path / "old.csv")}["V"]["mAP/vs_base"] == ""
    config["tables"]["table3"]["rows"][1]["base"] = "V"
    with pytest.raises(HavanaError, match="not the label of another row"):
        model.table_spec(config, "table3")

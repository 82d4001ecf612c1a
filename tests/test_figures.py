"""Figures 5–9 drawn from fabricated runs (tiny HDF5 files, JPEGs, history.csv, metrics JSONs): PNG size and plot
data."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import matplotlib.text
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from havana.cli import main
from havana.data.features import FeatureSplit, write_features
from havana.errors import HavanaError
from havana.layout import Layout
from havana.models.head import HavanaHead, HeadConfig, resolve_row, save_head
from havana.report import figures

DS = "synthetic"
SEEDS = [0, 1]
NUM_IDS, DIM = 6, 8


def make_config() -> dict:
    return {
        "seeds": SEEDS,
        "active_datasets": [DS],
        "extractors": {"bot_r18": {"arch": "resnet18"}, "bot_r34": {"arch": "resnet34"}},
        "heads": {
            "beta_by_dataset": {DS: 2.0, "msmt17": 2.0},
            "rows": {
                "havana": {},
                "vnae_jst_hvd": {},
                "ab_a0.1_b1.0": {"alpha": 0.1, "beta": 1.0},
                "ab_a0.1_b2.0": {"alpha": 0.1, "beta": None},
                "ab_a0.2_b1.0": {"alpha": 0.2, "beta": 1.0},
                "ab_a0.2_b2.0": {"alpha": 0.2, "beta": 2.0},
            },
        },
        "figures": {
            "fig5": {"dataset": DS, "extractor": "bot_r18", "row": "havana", "num_queries": 2, "top_k": 4},
            "fig6": {
                "dataset": DS,
                "extractor": "bot_r18",
                "row_mu": "havana",
                "row_sigma": "vnae_jst_hvd",
                "num_ids": 4,
            },
            "fig7": {"dataset": DS, "extractor": "bot_r18", "with_c": "havana", "without_c": "vnae_jst_hvd"},
            "fig8": {
                "datasets": [DS, "msmt17"],
                "extractor": "bot_r18",
                "rows": ["ab_a0.1_b1.0", "ab_a0.1_b2.0", "ab_a0.2_b1.0", "ab_a0.2_b2.0"],
            },
            "fig9": {
                "datasets": [DS],
                "extractors": ["bot_r18", "bot_r34"],
                "row": "havana",
                "sota": {"label": "ABD-Net", "params_m": 30.0, "values": {DS: 90.0}},
            },
        },
    }


def split(rng: np.random.Generator, pids: list[int], camids: list[int], prefix: str, noise: float) -> FeatureSplit:
    """Features = identity centre + noise, for both views (plain, flipped)."""
    centres = np.eye(NUM_IDS, DIM) * 3.0
    base = centres[pids] + noise * rng.standard_normal((len(pids), DIM))
    paths = [f"{prefix}/{i:03d}_{pid}.jpg" for i, pid in enumerate(pids)]
    return FeatureSplit(features=np.stack([base, base], axis=1), pids=pids, camids=camids, paths=paths)


def write_test_file(path: Path, seed: int, noise: float) -> None:
    rng = np.random.default_rng(seed)
    q_pids = list(range(NUM_IDS))
    g_pids = [pid for pid in range(NUM_IDS) for _ in range(4)]
    splits = {
        "query": split(rng, q_pids, [0] * NUM_IDS, "query", noise),
        "gallery": split(rng, g_pids, [1] * len(g_pids), "gallery", noise),
    }
    write_features(path, splits, {"dataset": DS})


def write_head(folder: Path, seed: int, constraint: bool) -> None:
    """A small head on DIM-d features (seeded weights); without the constraint it has a learned z_sigma."""
    torch.manual_seed(seed)
    save_head(folder / "head.pt", HavanaHead(HeadConfig(feature_dim=DIM, num_classes=NUM_IDS, constraint=constraint)))


def write_metrics(results: Path, dataset: str, extractor: str, head: str, seed: int, map_fraction: float) -> None:
    path = results / dataset / "metrics" / extractor / head / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"plain": {"mAP": map_fraction}, "flip": {"mAP": map_fraction}}))


def history(epochs: int, klv: float, reconz: float) -> pd.DataFrame:
    frame = pd.DataFrame({"epoch": np.arange(1, epochs + 1)})
    for term in ("total", "cls", "triplet", "jst", "reconx", "klz"):
        frame[term] = 1.0 / frame["epoch"]
    frame["reconz"] = reconz
    frame["klv"] = klv / frame["epoch"]
    frame["lr"] = 1e-5
    return frame


@pytest.fixture()
def run_dirs(tmp_path: Path) -> tuple[Path, Path]:
    results, resources = tmp_path / "results", tmp_path / "resources"
    write_test_file(results / DS / "features" / "bot_r18.h5", seed=0, noise=2.0)
    heads = results / DS / "heads" / "bot_r18"
    write_head(heads / "havana" / "seed0", seed=1, constraint=True)
    write_head(heads / "vnae_jst_hvd" / "seed0", seed=2, constraint=False)
    history(5, klv=2.0, reconz=0.5).to_csv(heads / "havana" / "seed0" / "history.csv", index=False)
    (heads / "havana" / "seed1").mkdir()
    history(6, klv=4.0, reconz=1.5).to_csv(heads / "havana" / "seed1" / "history.csv", index=False)
    history(5, klv=1.0, reconz=0.0).to_csv(heads / "vnae_jst_hvd" / "seed0" / "history.csv", index=False)
    (heads / "vnae_jst_hvd" / "seed1").mkdir()
    history(5, klv=1.0, reconz=0.0).to_csv(heads / "vnae_jst_hvd" / "seed1" / "history.csv", index=False)
    # Fig. 8 grid on the synthetic set only (msmt17 is not active); Fig. 9 ladder.
    for row, value in {"ab_a0.1_b1.0": 0.50, "ab_a0.1_b2.0": 0.52, "ab_a0.2_b1.0": 0.54, "ab_a0.2_b2.0": 0.56}.items():
        write_metrics(results, DS, "bot_r18", row, 0, value)
        write_metrics(results, DS, "bot_r18", row, 1, value + 0.02)
    for extractor, base, head in (("bot_r18", 0.781, 0.80), ("bot_r34", 0.82, 0.84)):
        for seed in SEEDS:
            write_metrics(results, DS, extractor, "baseline", seed, base)
            write_metrics(results, DS, extractor, "havana", seed, head)
    # Tiny JPEGs and the manifest for Fig. 5: each image's colour names it (thumbnail_identity decodes it).
    rows = []
    with h5py.File(results / DS / "features" / "bot_r18.h5", "r") as h5:
        for split_name in ("query", "gallery"):
            for index, (path, pid) in enumerate(zip(h5[split_name]["paths"].asstr()[...], h5[split_name]["pids"][...])):
                image = resources / DS / path
                image.parent.mkdir(parents=True, exist_ok=True)
                colour = (40 * int(pid), 8 * index, 200 if split_name == "gallery" else 40)
                Image.new("RGB", (16, 32), color=colour).save(image, format="JPEG")
                rows.append((path, int(pid), 0 if split_name == "query" else 1, split_name))
    pd.DataFrame(rows, columns=["path", "pid", "camid", "split"]).to_csv(resources / DS / "manifest.csv", index=False)
    return results, resources


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def inches_to_pixels(size: tuple[float, float]) -> tuple[int, int]:
    return round(size[0] * figures.DPI), round(size[1] * figures.DPI)


def test_retrieval_correctness_by_hand() -> None:
    ranked = np.array([[2, 0, 1], [1, 2, -1]])
    correct = figures.retrieval_correctness(np.array([7, 9]), np.array([7, 9, 7]), ranked)
    assert correct.tolist() == [[True, True, False], [True, False, False]]


def test_ab_grid_by_hand() -> None:
    points = {"a": (0.1, 1.0), "b": (0.1, 2.0), "c": (0.2, 1.0), "d": (0.2, 2.0)}
    alphas, betas, grid = figures.ab_grid(points, {"a": 50.0, "b": 52.0, "c": None, "d": 56.0})
    assert alphas == [0.1, 0.2] and betas == [1.0, 2.0]
    np.testing.assert_array_equal(grid, [[50.0, 52.0], [np.nan, 56.0]])


def test_fig8_grid_reads_alpha_beta_and_dataset_default_beta(run_dirs) -> None:
    layout = Layout(*map(str, run_dirs))
    config = make_config()
    settings = figures.Fig8Config(**config["figures"]["fig8"])
    resolved = resolve_row(config, "ab_a0.1_b2.0", DS)
    assert (resolved.alpha, resolved.beta) == (0.1, 2.0)  # beta null -> beta_by_dataset
    alphas, betas, grid = figures.fig8_grid(config, layout, settings, DS)
    # mean over seeds: (50 + 52) / 2 = 51, (52 + 54) / 2 = 53, (54 + 56) / 2 = 55, (56 + 58) / 2 = 57.
    np.testing.assert_allclose(grid, [[51.0, 53.0], [55.0, 57.0]])
    with pytest.raises(HavanaError, match="msmt17/metrics/bot_r18/ab_a0.1_b1.0/seed0.json, which does not exist"):
        figures.fig8_grid(config, layout, settings, "msmt17")


def test_parameter_counts_and_fig9_points() -> None:
    config = make_config()
    # torchvision resnet18 11,689,512 - fc 513,000 + BNNeck 2 * 512 = 11,177,536; resnet34 21,797,672 - 513,000 + 1,024.
    assert figures.extractor_test_parameters(config, "bot_r18") == (11_177_536, 512)
    assert figures.extractor_test_parameters(config, "bot_r34") == (21_285_696, 512)
    assert figures.head_test_parameters(2048) == 2049 * 2048 * 2
    params = {"bot_r18": (11_000_000, 512), "bot_r34": (21_000_000, 512)}
    points = figures.fig9_points(
        ["bot_r18", "bot_r34"],
        params,
        {"bot_r18": 78.1, "bot_r34": 80.0},
        {"bot_r18": 80.0, "bot_r34": None},
        ("ABD-Net", 69.0, 88.3),
    )
    head_m = 513 * 512 * 2 / 1e6  # 0.525312
    got = [(p.series, p.label, round(p.delta_params_m, 6), round(p.gain, 6)) for p in points]
    assert got == [
        ("baseline", "bot_r18", 0.0, 0.0),
        ("havana", "bot_r18", round(head_m, 6), 1.9),
        ("baseline", "bot_r34", 10.0, 1.9),
        ("sota", "ABD-Net", 58.0, 10.2),
    ]
    assert figures.fig9_points(["bot_r18"], params, {"bot_r18": None}, {}) == []


def test_loss_band_mean_std_and_off_terms() -> None:
    runs = [history(5, klv=2.0, reconz=0.5), history(6, klv=4.0, reconz=1.5)]
    epochs, mean, std = figures.loss_band(runs, "klv")
    assert epochs.tolist() == [1, 2, 3, 4, 5]  # truncated to the shorter run
    np.testing.assert_allclose(mean, 3.0 / np.arange(1, 6))
    np.testing.assert_allclose(std, 1.0 / np.arange(1, 6))
    assert figures.loss_band([history(5, klv=1.0, reconz=0.0)], "reconz") is None
    assert figures.loss_band(runs, "no_such_term") is None


def test_identity_choice_and_tsne_helpers() -> None:
    pids = np.array([3, 3, 5, 5, 5, 8, 9, -1])
    ids = figures.choose_identities(pids, 2, seed=0)
    assert len(ids) == 2 and set(ids) <= {3, 5, 8, 9}
    assert np.array_equal(ids, figures.choose_identities(pids, 2, seed=0))
    rows = figures.identity_sample(pids, np.array([5]), max_per_id=2, seed=0)
    assert len(rows) == 2 and set(rows) <= {2, 3, 4}
    assert figures.tsne_perplexity(31) == 10.0 and figures.tsne_perplexity(1000) == 30.0
    xy = figures.tsne_2d(np.random.default_rng(0).standard_normal((12, 5)), seed=0)
    assert xy.shape == (12, 2) and np.array_equal(
        xy, figures.tsne_2d(np.random.default_rng(0).standard_normal((12, 5)), 0)
    )


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("fig6", figures.fig6_size()),
        ("fig7", figures.fig7_size()),
        ("fig8", figures.fig8_size(1)),  # msmt17 is not an active dataset: no panel
        ("fig9", figures.fig9_size(1)),
    ],
)
def test_figures_render_at_their_size(tmp_path: Path, run_dirs, name: str, size) -> None:
    out = tmp_path / "figures" / f"{name}.png"
    figures.write_figure(make_config(), name, out, Layout(*map(str, run_dirs)))
    assert png_size(out) == inches_to_pixels(size)
    assert [p.name for p in out.parent.iterdir()] == [f"{name}.png"]  # no temporary file left


def thumbnail_identity(pixels: np.ndarray) -> tuple[str, int, int]:
    """(split, index in that split, pid) of a fabricated image, from its colour (run_dirs: R 40 pid, G 8 index, B 200
    for gallery and 40 for query images; JPEG and resizing move a uniform colour by a few levels at most)."""
    red, green, blue = pixels.reshape(-1, pixels.shape[-1])[:, :3].astype(float).mean(0)
    return ("gallery" if blue > 120 else "query"), round(green / 8), round(red / 40)


def cosine_ranking(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """[Q, G] gallery indices by increasing cosine distance (the default metric; every gallery image is in another
    camera than every query here, so the protocol removes nothing)."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    return np.argsort(1.0 - q @ g.T, axis=1, kind="stable")


def test_fig5_draws_each_methods_top_k_with_true_and_false_borders(tmp_path: Path, run_dirs, monkeypatch) -> None:
    """Read back what Fig. 5 draws (each panel's image and border colour, each row's label) and check it against
    rankings computed here from the feature file and the head: the baseline's top-k of each query in the upper row,
    the head's (z_mu) in the lower, green borders on the query's identity and red on others."""
    from havana.models.head import load_head

    results, _ = run_dirs
    config, top_k = make_config(), make_config()["figures"]["fig5"]["top_k"]
    drawn = []
    save = figures.save_png

    def capture(fig, out):
        grid = []
        for ax in fig.axes:
            image = ax.get_images()[0].get_array() if ax.get_images() else None
            border = ax.spines["left"].get_edgecolor()
            grid.append((None if image is None else thumbnail_identity(np.asarray(image)), border, ax.get_ylabel()))
        drawn.append(grid)
        return save(fig, out)

    monkeypatch.setattr(figures, "save_png", capture)
    out = tmp_path / "fig5.png"
    figures.write_figure(config, "fig5", out, Layout(*map(str, run_dirs)))
    assert png_size(out) == inches_to_pixels(figures.fig5_size(2, top_k))

    with h5py.File(results / DS / "features" / "bot_r18.h5", "r") as h5:
        query, gallery = (h5[name]["features"][:, 0] for name in ("query", "gallery"))
        q_pids, g_pids = h5["query"]["pids"][...], h5["gallery"]["pids"][...]
    head = load_head(results / DS / "heads" / "bot_r18" / "havana" / "seed0" / "head.pt").eval()
    with torch.no_grad():
        z_query, z_gallery = (head.encode(torch.from_numpy(x).float())[0].numpy() for x in (query, gallery))
    expected = {"Baseline": cosine_ranking(query, gallery), "HAVANA (havana)": cosine_ranking(z_query, z_gallery)}

    [grid] = drawn
    rows = [grid[i : i + top_k + 1] for i in range(0, len(grid), top_k + 1)]
    assert len(rows) == 4  # 2 queries x (baseline, head)
    shown, borders, differ = [], set(), 0
    for pair in (rows[0:2], rows[2:4]):
        [(query_split, q, q_pid)] = {row[0][0] for row in pair}  # both rows show the same query image
        assert query_split == "query" and q_pid == q_pids[q]
        shown.append(q)
        tops = []
        for row, title in zip(pair, expected):
            assert row[0][2] == title  # the baseline above, the head below
            panels = [identity for identity, _, _ in row[1:]]
            assert panels == [("gallery", int(g), int(g_pids[g])) for g in expected[title][q, :top_k]], title
            for (_, g, g_pid), (_, border, _) in zip(panels, row[1:]):
                red, green = border[0], border[1]
                assert (green > red) if g_pid == q_pid else (red > green), (title, g, border)
                borders.add(g_pid == q_pid)
            tops.append(panels)
        differ += tops[0] != tops[1]
    assert len(set(shown)) == 2
    # The oracle can fail: the two methods rank differently, and both border colours are drawn.
    assert differ >= 1 and borders == {True, False}


def test_missing_inputs_are_errors_naming_them_and_inactive_datasets_get_no_panel(tmp_path: Path, run_dirs) -> None:
    layout = Layout(*map(str, run_dirs))
    config = make_config()
    config["figures"]["fig9"]["datasets"] = [DS, "msmt17"]  # msmt17 is not active: no panel, nothing read
    figures.write_figure(config, "fig9", tmp_path / "fig9.png", layout)
    assert png_size(tmp_path / "fig9.png") == inches_to_pixels(figures.fig9_size(1))
    config["figures"]["fig7"]["without_c"] = "ab_a0.2_b1.0"  # trained rows of Fig. 8 have no history here
    missing = layout.head_file(DS, "bot_r18", "ab_a0.2_b1.0", 0, "history")
    with pytest.raises(HavanaError, match=f"figure fig7 needs {missing}, which does not exist \\(1 more of its inputs"):
        figures.write_figure(config, "fig7", tmp_path / "fig7.png", layout)
    config["active_datasets"] = ["msmt17"]
    with pytest.raises(HavanaError, match="figures.fig7 draws no dataset of active_datasets"):
        figures.write_figure(config, "fig7", tmp_path / "fig7.png", layout)
    assert not (tmp_path / "fig7.png").exists()


def test_cli_figure(tmp_path: Path, run_dirs, capsys) -> None:
    results, resources = run_dirs
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(make_config()))
    out = tmp_path / "out" / "fig9_params.png"
    args = [
        "figure",
        "--config",
        str(config_path),
        "--figure",
        "fig9",
        "--resources-dir",
        str(resources),
        "--out",
        str(out),
    ]
    assert main(args[:5] + ["--results-dir", str(results)] + args[5:]) == 0
    assert out.is_file() and (out.parent / "fig9_params.png.provenance.yaml").is_file()
    assert main(args[:5] + ["--results-dir", str(tmp_path / "none")] + args[5:]) == 2
    assert "figure fig9 needs" in capsys.readouterr().err


def text_outside_canvas(fig) -> list[str]:
    """What the renderer draws outside the figure's canvas: each axes' drawn extent (title, axis labels, the tick
    labels in view, legend, texts: `get_tightbbox`) and each figure-level text (suptitle, figure legend)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    boxes = [(f"axes {ax.get_title()!r}", ax.get_tightbbox(renderer)) for ax in fig.axes if ax.get_visible()]
    in_axes = {id(text) for ax in fig.axes for text in ax.findobj(Text)}  # tick labels included, in view or not
    boxes += [
        (repr(text.get_text()), text.get_window_extent(renderer))
        for text in fig.findobj(Text)
        if id(text) not in in_axes and text.get_visible() and text.get_text().strip()
    ]
    return [
        f"{what} at {tuple(round(v) for v in box.bounds)} on a {width:.0f}x{height:.0f} canvas"
        for what, box in boxes
        if box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5
    ]


def points_under_legends(fig) -> list[tuple[float, float]]:
    """Data points (line vertices) hidden under a legend of the same axes, in display coordinates."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    hidden = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        for line in ax.get_lines():
            for x, y in ax.transData.transform(line.get_xydata()):
                if box.contains(x, y):
                    hidden.append((x, y))
    return hidden


@pytest.mark.parametrize("name", ["fig5", "fig6", "fig7", "fig8", "fig9", "fig9 without SOTA parameters"])
def test_every_text_lies_inside_the_canvas_and_no_legend_hides_data(
    tmp_path: Path, run_dirs, monkeypatch, name
) -> None:
    config = make_config()
    if name.endswith("without SOTA parameters"):  # the demo's case: a long note in the title, the SOTA point absent
        config["figures"]["fig9"]["sota"]["params_m"] = None
        name = "fig9"
    checked = []
    save = figures.save_png

    def check_then_save(fig, out):
        checked.append(
            (
                text_outside_canvas(fig),
                points_under_legends(fig),
                [t.get_text() for ax in fig.axes for t in (ax.title,)],
            )
        )
        return save(fig, out)

    monkeypatch.setattr(figures, "save_png", check_then_save)
    figures.write_figure(config, name, tmp_path / f"{name}.png", Layout(*map(str, run_dirs)))
    [(outside, hidden, titles)] = checked
    assert outside == [] and hidden == []
    if name == "fig5":  # rank numbers above the baseline row's columns of every query
        assert titles.count("1") == 2 and titles.count("4") == 2


def test_fig8_heatmap_writes_every_cells_value(tmp_path: Path, run_dirs, monkeypatch) -> None:
    texts = []
    save = figures.save_png
    monkeypatch.setattr(
        figures, "save_png", lambda fig, out: (texts.extend(t.get_text() for t in fig.axes[0].texts), save(fig, out))[1]
    )
    figures.write_figure(make_config(), "fig8", tmp_path / "fig8.png", Layout(*map(str, run_dirs)))
    assert sorted(texts) == ["51.0", "53.0", "55.0", "57.0"]  # the grid of test_fig8_grid, by hand


def test_no_panel_says_no_data_where_its_input_exists(tmp_path: Path, run_dirs, monkeypatch) -> None:
    """Every input of every figure exists in run_dirs (Fig. 8 restricted to the dataset that has its grid): no text
    artist of any figure may say "no data", and Fig. 6 draws its sigma panel from the learned-sigma head."""
    results, resources = run_dirs
    layout = Layout(str(results), str(resources))
    config = make_config()
    config["figures"]["fig8"]["datasets"] = [DS]
    drawn: dict[str, list[str]] = {}
    save_png = figures.save_png

    def capture(fig, out):
        drawn[Path(out).stem] = [text.get_text() for text in fig.findobj(matplotlib.text.Text)]
        return save_png(fig, out)

    monkeypatch.setattr(figures, "save_png", capture)
    for name in figures.FIGURES:
        figures.write_figure(config, name, tmp_path / f"{name}.png", layout)
    assert sorted(drawn) == sorted(figures.FIGURES)
    for name, texts in drawn.items():
        assert not [text for text in texts if "no data" in text], (name, texts)
    assert r"HAVANA-$\sigma$" in drawn["fig6"] and r"HAVANA-$\mu$" in drawn["fig6"]
    # The oracle can fail: without the sigma row's head.pt the figure is an error naming it (never a "no data" panel).
    missing = results / DS / "heads" / "bot_r18" / "vnae_jst_hvd" / "seed0" / "head.pt"
    missing.unlink()
    with pytest.raises(HavanaError, match=f"figure fig6 needs {missing}, which does not exist"):
        figures.write_figure(config, "fig6", tmp_path / "fig6.png", layout)


def test_head_embeddings_are_encoded_from_head_and_features(run_dirs) -> None:
    results, _ = run_dirs
    features = results / DS / "features" / "bot_r18.h5"
    head_path = results / DS / "heads" / "bot_r18" / "vnae_jst_hvd" / "seed0" / "head.pt"
    sigma = figures.head_test_embeddings(features, head_path, "logvar")
    mu = figures.head_test_embeddings(features, head_path)
    raw = figures.read_test_embeddings(features)
    from havana.models.head import load_head

    with torch.no_grad():
        want_mu, want_logvar = load_head(head_path).encode(torch.as_tensor(raw.gallery, dtype=torch.float32))
    np.testing.assert_allclose(mu.gallery, want_mu.numpy(), atol=1e-6)
    np.testing.assert_allclose(sigma.gallery, want_logvar.numpy(), atol=1e-6)
    assert sigma.gallery.std() > 0 and np.array_equal(mu.g_pids, raw.g_pids)
    assert figures.head_test_embeddings(features, head_path.with_name("none.pt")) is None

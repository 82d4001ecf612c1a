"""The paper's Figures 5–9 (matplotlib Agg, one function per figure, seeded), from metrics, histories and features.

Each figure's settings class declares the files it reads (`reads`, through havana.layout: the same list is the
figure rule's Snakemake input); `write_figure` checks they all exist (a missing one is an error naming it) and
`figN(config, settings, layout, out)` reads them, turns them into plot data with a pure function (exposed for tests),
draws, and saves a PNG atomically. Datasets outside active_datasets get no panel. Heads shown in Figs. 5 and 6 are the
first seed's, encoded in the figure job from head.pt and the features (havana.evaluation.scoring.encode): no head's
embeddings are stored.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from havana.config import from_mapping, section  # noqa: E402
from havana.data.datasets import dataset_title  # noqa: E402
from havana.errors import HavanaError  # noqa: E402
from havana.layout import BASELINE, Layout, active_datasets, require  # noqa: E402
from havana.layout import seeds as config_seeds  # noqa: E402
from havana.report import model  # noqa: E402
from havana.utils.atomic import atomic_path  # noqa: E402

DPI = 100  # every figure: size in inches × DPI pixels, no tight bounding box, so the PNG size is known
STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": DPI,
}
BASELINE_COLOR, HAVANA_COLOR, SOTA_COLOR = "tab:blue", "tab:red", "tab:green"
CORRECT_COLOR, WRONG_COLOR = "#1a9641", "#d7191c"
FIG7_TERMS = (("klv", r"$\mathcal{L}_{klv}$"), ("klz", r"$\mathcal{L}_{klz}$"), ("reconz", r"$\mathcal{L}_{reconz}$"))
THUMBNAIL = (64, 128)  # (width, height) every retrieval image is resized to


@dataclass(frozen=True)
class Fig5Config:
    dataset: str  # the dataset whose query/gallery images are shown
    extractor: str  # baseline features and the head's input
    row: str = "havana"  # heads.rows name of the lower row of each query
    num_queries: int = 4  # queries shown, chosen at random (seeded) among those with a true match
    top_k: int = 10  # gallery results per query
    seed: int = 0  # seeds the choice of queries

    def on(self, active: Sequence[str]) -> Fig5Config | None:
        return self if self.dataset in active else None

    def runs(self) -> list[tuple[str, str]]:
        return [(self.extractor, self.row)]

    def reads(self, layout: Layout, seeds: Sequence[int]) -> list[str]:
        ds, ex = self.dataset, self.extractor
        return [layout.features(ds, ex), layout.head_file(ds, ex, self.row, seeds[0], "head"), layout.manifest(ds)]


@dataclass(frozen=True)
class Fig6Config:
    dataset: str  # test identities come from this dataset's query and gallery
    extractor: str  # the baseline features
    row_mu: str = "havana"  # panel HAVANA-mu: z_mu of this row
    row_sigma: str = "vnae_jst_hvd"  # panel HAVANA-sigma: exp(0.5·z_logvar) of this row's head (a learned z_sigma)
    num_ids: int = 10  # identities drawn at random (seeded)
    max_per_id: int = 20  # images per identity at most, so t-SNE stays quick
    seed: int = 0  # seeds the identity draw and t-SNE (random_state)

    def on(self, active: Sequence[str]) -> Fig6Config | None:
        return self if self.dataset in active else None

    def runs(self) -> list[tuple[str, str]]:
        return [(self.extractor, self.row_mu), (self.extractor, self.row_sigma)]

    def reads(self, layout: Layout, seeds: Sequence[int]) -> list[str]:
        ds, ex = self.dataset, self.extractor
        return [layout.features(ds, ex)] + [
            layout.head_file(ds, ex, row, seeds[0], "head") for row in (self.row_mu, self.row_sigma)
        ]


@dataclass(frozen=True)
class Fig7Config:
    dataset: str  # the head runs' dataset
    extractor: str  # the head runs' extractor
    with_c: str = "havana"  # row trained with the covariance constraint
    without_c: str = "vnae_jst_hvd"  # row trained without it

    def on(self, active: Sequence[str]) -> Fig7Config | None:
        return self if self.dataset in active else None

    def runs(self) -> list[tuple[str, str]]:
        return [(self.extractor, self.with_c), (self.extractor, self.without_c)]

    def reads(self, layout: Layout, seeds: Sequence[int]) -> list[str]:
        return [
            layout.head_file(self.dataset, self.extractor, row, seed, "history")
            for row in (self.with_c, self.without_c)
            for seed in seeds
        ]


@dataclass(frozen=True)
class Fig8Config:
    datasets: list[str]  # one 3-D panel per dataset
    extractor: str  # the head runs' extractor
    rows: list[str]  # heads.rows names of the alpha × beta grid (alpha, beta read from each row)
    metric: str = "mAP"  # bar height, plain features, mean over seeds

    def on(self, active: Sequence[str]) -> Fig8Config | None:
        datasets = [dataset for dataset in self.datasets if dataset in active]
        return dataclasses.replace(self, datasets=datasets) if datasets else None

    def runs(self) -> list[tuple[str, str]]:
        return [(self.extractor, row) for row in self.rows]

    def reads(self, layout: Layout, seeds: Sequence[int]) -> list[str]:
        return [
            layout.metrics(ds, self.extractor, row, seed) for ds in self.datasets for row in self.rows for seed in seeds
        ]


@dataclass(frozen=True)
class SotaConfig:
    label: str  # e.g. ABD-Net
    params_m: float | None = None  # test-time parameters in millions (official code); None: the point is not drawn
    values: dict[str, float] = field(default_factory=dict)  # reported mAP (percent) per dataset


@dataclass(frozen=True)
class Fig9Config:
    datasets: list[str]  # one panel per dataset
    extractors: list[str]  # the ResNet ladder; the first one's baseline is the origin
    row: str = "havana"  # the head row applied to each extractor (red)
    sota: SotaConfig | None = None  # the green point

    def on(self, active: Sequence[str]) -> Fig9Config | None:
        datasets = [dataset for dataset in self.datasets if dataset in active]
        return dataclasses.replace(self, datasets=datasets) if datasets else None

    def runs(self) -> list[tuple[str, str]]:
        return [(extractor, row) for extractor in self.extractors for row in (BASELINE, self.row)]

    def reads(self, layout: Layout, seeds: Sequence[int]) -> list[str]:
        return [
            layout.metrics(ds, extractor, row, seed)
            for ds in self.datasets
            for extractor, row in self.runs()
            for seed in seeds
        ]


# ---------------------------------------------------------------- paths and readers (the IO edge)


@dataclass
class TestEmbeddings:
    """Query then gallery rows of one embedding (view 0: plain images), with identities, cameras and image paths."""

    query: np.ndarray
    gallery: np.ndarray
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray
    q_paths: list[str]
    g_paths: list[str]


def _test_embeddings(data: Any, query: np.ndarray, gallery: np.ndarray) -> TestEmbeddings:
    q, g = data["query"], data["gallery"]
    return TestEmbeddings(
        query=query,
        gallery=gallery,
        q_pids=q.pids,
        g_pids=g.pids,
        q_camids=q.camids,
        g_camids=g.camids,
        q_paths=q.paths,
        g_paths=g.paths,
    )


def read_test_embeddings(path: str | os.PathLike) -> TestEmbeddings | None:
    """Plain-view query/gallery rows of a feature file; None if it is absent."""
    from havana.data.features import read_features

    if not Path(path).is_file():
        return None
    data = read_features(path, ("query", "gallery"))
    return _test_embeddings(data, data["query"].features[:, 0], data["gallery"].features[:, 0])


def head_test_embeddings(features: Path, head: Path, part: str = "mu") -> TestEmbeddings | None:
    """Plain-view query/gallery rows of a head's z_mu (`part` "mu") or z_logvar ("logvar"), encoded here from head.pt
    and the features through havana.evaluation.scoring (no head's embeddings are stored); None when either file is
    absent."""
    from havana.evaluation import scoring

    if not Path(features).is_file() or not Path(head).is_file():
        return None
    data = scoring.read_test_features(features)
    model = scoring.load_head_for(head, data, features)
    encoded = [
        scoring.encode(model, data[name].features[:, :1], logvar=part == "logvar") for name in scoring.TEST_SPLITS
    ]
    query, gallery = (getattr(e, part)[:, 0] for e in encoded)
    return _test_embeddings(data, query, gallery)


def read_histories(layout: Layout, dataset: str, extractor: str, row: str, seeds: Sequence[int]) -> list[pd.DataFrame]:
    """The history.csv of each seed's head run."""
    return [pd.read_csv(layout.head_file(dataset, extractor, row, seed, "history")) for seed in seeds]


def mean_metric(
    layout: Layout, dataset: str, extractor: str, row: str, seeds: Sequence[int], metric: str = "mAP"
) -> float | None:
    """Mean over the seeds of one plain metric, in percent."""
    keys = {(dataset, extractor, row, seed) for seed in seeds}
    found = model.collect_metrics(layout, keys, "a figure")
    values = [model.metric_percent(found[key], key, metric, flip=False) for key in sorted(found)]
    return float(np.mean(values)) if values else None


# ---------------------------------------------------------------- pure computations behind the plots


def retrieval_correctness(q_pids: np.ndarray, g_pids: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """[Q, K] booleans: does the k-th retrieved gallery image of each query show the query's identity (False where
    `ranked` is -1, i.e. nothing was retrieved)."""
    ranked = np.asarray(ranked)
    return (ranked >= 0) & (np.asarray(g_pids)[np.maximum(ranked, 0)] == np.asarray(q_pids)[:, None])


def choose_queries(
    q_pids: np.ndarray, q_camids: np.ndarray, g_pids: np.ndarray, g_camids: np.ndarray, count: int, seed: int
) -> np.ndarray:
    """`count` query indices (sorted), drawn with `seed` among queries with a true match in another camera."""
    valid = [i for i in range(len(q_pids)) if np.any((g_pids == q_pids[i]) & (g_camids != q_camids[i]))]
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(np.asarray(valid, dtype=np.int64), size=min(count, len(valid)), replace=False))


def choose_identities(pids: np.ndarray, num_ids: int, seed: int) -> np.ndarray:
    """`num_ids` identities drawn with `seed` among the non-negative pids, sorted."""
    candidates = np.unique(np.asarray(pids)[np.asarray(pids) >= 0])
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=min(num_ids, len(candidates)), replace=False))


def identity_sample(pids: np.ndarray, ids: np.ndarray, max_per_id: int, seed: int) -> np.ndarray:
    """Row indices of at most `max_per_id` rows (seeded choice) of each identity in `ids`, sorted."""
    rng = np.random.default_rng(seed)
    chosen = []
    for pid in ids:
        rows = np.flatnonzero(pids == pid)
        chosen.append(rng.permutation(rows)[:max_per_id])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def tsne_perplexity(n: int) -> float:
    """scikit-learn's default 30, reduced for small N so that perplexity < N (here ≤ (N − 1) / 3)."""
    return float(min(30.0, max(1.0, (n - 1) / 3)))


def tsne_2d(points: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of `points` with a fixed random_state and PCA initialisation, on one thread (a few hundred points
    at most: threads only add start-up and contention)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    points = np.asarray(points, dtype=np.float64)
    with threadpool_limits(limits=1):
        return TSNE(
            n_components=2, perplexity=tsne_perplexity(len(points)), init="pca", random_state=seed, learning_rate="auto"
        ).fit_transform(points)


def loss_band(histories: Sequence[pd.DataFrame], term: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(epochs, mean, std) of one loss term over seeds (truncated to the shortest run); None if the term is off
    (absent, empty or all zero) in every run."""
    curves = []
    for history in histories:
        if term not in history:
            continue
        values = pd.to_numeric(history[term], errors="coerce").to_numpy(dtype=np.float64)
        if np.all(np.isnan(values) | (values == 0)):
            continue
        curves.append((history["epoch"].to_numpy(), values))
    if not curves:
        return None
    length = min(len(values) for _, values in curves)
    stack = np.stack([values[:length] for _, values in curves])
    return curves[0][0][:length], stack.mean(axis=0), stack.std(axis=0)


def ab_grid(
    points: Mapping[str, tuple[float, float]], values: Mapping[str, float | None]
) -> tuple[list[float], list[float], np.ndarray]:
    """(sorted alphas, sorted betas, matrix [A, B] of values, NaN where a row has no value) from row -> (alpha,
    beta)."""
    alphas = sorted({alpha for alpha, _ in points.values()})
    betas = sorted({beta for _, beta in points.values()})
    grid = np.full((len(alphas), len(betas)), np.nan)
    for row, (alpha, beta) in points.items():
        value = values.get(row)
        if value is not None:
            grid[alphas.index(alpha), betas.index(beta)] = value
    return alphas, betas, grid


def head_test_parameters(feature_dim: int) -> int:
    """Test-time parameters of the head's f_mu, counted as §4.4 does: (D + 1) · D · 2."""
    return (feature_dim + 1) * feature_dim * 2


def extractor_test_parameters(config: Mapping[str, Any], extractor: str) -> tuple[int, int]:
    """(test-time parameters, feature dim) of an extractor: its architecture built without weights, classifiers
    excluded."""
    import torch

    from havana.models.extractor import FEATURE_DIMS, build_extractor
    from havana.models.extractor_config import extractor_config

    settings = dataclasses.replace(extractor_config(dict(config), extractor), pretrained=False, weights=None)
    with torch.device("meta"):
        model = build_extractor(settings, num_classes=1)
    count = sum(p.numel() for name, p in model.named_parameters() if "classifier" not in name.split("."))
    return count, FEATURE_DIMS[settings.arch]


@dataclass(frozen=True)
class GainPoint:
    """One Fig. 9 point: parameters and mAP relative to the reference (first extractor's baseline)."""

    series: str  # "baseline", "havana" or "sota"
    label: str
    params_m: float  # absolute test-time parameters, millions
    delta_params_m: float  # params_m minus the reference's
    map_percent: float
    gain: float  # map_percent minus the reference's


def fig9_points(
    extractors: Sequence[str],
    params: Mapping[str, tuple[int, int]],
    baseline_map: Mapping[str, float | None],
    havana_map: Mapping[str, float | None],
    sota: tuple[str, float, float] | None = None,
) -> list[GainPoint]:
    """Baseline (extractor parameters) and HAVANA (plus f_mu parameters) points relative to the first extractor's
    baseline, plus the SOTA point (label, params in millions, mAP); [] when the reference has no result."""
    reference = extractors[0]
    reference_map = baseline_map.get(reference)
    if reference_map is None:
        return []
    reference_m = params[reference][0] / 1e6
    points = []
    for extractor in extractors:
        count, dim = params[extractor]
        for series, source, total in (
            ("baseline", baseline_map, count),
            ("havana", havana_map, count + head_test_parameters(dim)),
        ):
            value = source.get(extractor)
            if value is not None:
                points.append(
                    GainPoint(series, extractor, total / 1e6, total / 1e6 - reference_m, value, value - reference_map)
                )
    if sota is not None:
        label, params_m, value = sota
        points.append(GainPoint("sota", label, params_m, params_m - reference_m, value, value - reference_map))
    return points


# ---------------------------------------------------------------- drawing helpers


def no_data(ax: plt.Axes, what: str) -> None:
    """Turn `ax` into a panel that says which inputs are missing."""
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        f"no data for {what}",
        ha="center",
        va="center",
        wrap=True,
        fontsize=8,
        color="0.3",
        transform=ax.transAxes,
    )


def save_png(fig: plt.Figure, out: str | os.PathLike) -> Path:
    """Save `fig` as PNG atomically (temporary name beside `out`, then rename) and close it."""
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return Path(out)


# ---------------------------------------------------------------- Fig. 5: retrieval grid


def _load_thumbnail(path: Path | None) -> np.ndarray:
    """An RGB thumbnail of the image at `path`, or a grey tile when it cannot be found."""
    from PIL import Image

    if path is None or not path.is_file():
        return np.full((THUMBNAIL[1], THUMBNAIL[0], 3), 200, dtype=np.uint8)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize(THUMBNAIL))


def fig5_size(num_queries: int, top_k: int) -> tuple[float, float]:
    """Figure size in inches: 0.8 in per image column (query + top-k), 1.5 in per row (2 rows per query)."""
    return 0.8 * (top_k + 1), 1.5 * 2 * max(1, num_queries)


def fig5(config: Mapping[str, Any], settings: Fig5Config, layout: Layout, out: str | os.PathLike) -> Path:
    """Top-k retrieval for a few seeded queries: baseline row above HAVANA row, green/red borders for right/wrong."""
    from havana.data.datasets import read_manifest
    from havana.evaluation.rank import EvaluationConfig, topk_indices

    seed = config_seeds(config)[0]
    features = layout.features(settings.dataset, settings.extractor)
    baseline = read_test_embeddings(features)
    havana = head_test_embeddings(
        features, layout.head_file(settings.dataset, settings.extractor, settings.row, seed, "head")
    )
    reference = baseline if baseline is not None else havana
    queries = choose_queries(
        reference.q_pids, reference.q_camids, reference.g_pids, reference.g_camids, settings.num_queries, settings.seed
    )
    manifest_path = Path(layout.manifest(settings.dataset))
    manifest = read_manifest(manifest_path)
    known = set(manifest["path"])
    image_root = manifest_path.parent  # manifest paths are relative to its folder

    def image(path: str) -> np.ndarray:
        return _load_thumbnail(image_root / path if path in known else None)

    metric = from_mapping(EvaluationConfig, config.get("evaluation") or {}, "evaluation").metric
    methods = [("Baseline", baseline), (f"HAVANA ({settings.row})", havana)]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            2 * max(1, len(queries)), settings.top_k + 1, figsize=fig5_size(len(queries), settings.top_k), squeeze=False
        )
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        for method_index, (title, data) in enumerate(methods):
            if data is None:
                for q in range(max(1, len(queries))):
                    for ax in axes[2 * q + method_index]:
                        ax.set_axis_off()
                    no_data(axes[2 * q + method_index][settings.top_k // 2], f"{title} on {settings.dataset}")
                continue
            ranked = topk_indices(
                data.query[queries],
                data.gallery,
                settings.top_k,
                metric=metric,
                q_pids=data.q_pids[queries],
                g_pids=data.g_pids,
                q_camids=data.q_camids[queries],
                g_camids=data.g_camids,
            )
            correct = retrieval_correctness(data.q_pids[queries], data.g_pids, ranked)
            for q, query in enumerate(queries):
                row = axes[2 * q + method_index]
                row[0].imshow(image(data.q_paths[query]))
                row[0].set_ylabel(title, fontsize=7)
                for spine in row[0].spines.values():
                    spine.set_visible(True)
                    spine.set_color("0.4")
                row[0].set_title("query" if method_index == 0 else "")
                for k in range(settings.top_k):
                    ax = row[k + 1]
                    if k >= ranked.shape[1] or ranked[q, k] < 0:  # fewer than top_k gallery images remain
                        ax.set_axis_off()
                        continue
                    ax.imshow(image(data.g_paths[ranked[q, k]]))
                    if method_index == 0:
                        ax.set_title(str(k + 1), pad=2)  # the rank, above the column
                    for spine in ax.spines.values():
                        spine.set_visible(True)
                        spine.set_color(CORRECT_COLOR if correct[q, k] else WRONG_COLOR)
                        spine.set_linewidth(3)
        width, height = fig5_size(len(queries), settings.top_k)
        fig.suptitle(
            f"Fig. 5: top-{settings.top_k} retrieval, {dataset_title(settings.dataset)} "
            f"({settings.extractor})\ngreen: same identity, red: different identity"
        )
        fig.subplots_adjust(left=0.3 / width, right=0.99, top=1 - 0.75 / height, bottom=0.01, wspace=0.08, hspace=0.15)
        return save_png(fig, out)


# ---------------------------------------------------------------- Fig. 6: t-SNE


def fig6_size() -> tuple[float, float]:
    return 12.0, 4.2


def fig6(config: Mapping[str, Any], settings: Fig6Config, layout: Layout, out: str | os.PathLike) -> Path:
    """t-SNE of the same images of `num_ids` seeded identities: baseline, HAVANA-mu (z_mu), HAVANA-sigma (exp(½
    logvar))."""
    seed = config_seeds(config)[0]
    ds, ex = settings.dataset, settings.extractor
    features = layout.features(ds, ex)
    panels = [
        ("Baseline", read_test_embeddings(features), None),
        (
            r"HAVANA-$\mu$",
            head_test_embeddings(features, layout.head_file(ds, ex, settings.row_mu, seed, "head")),
            None,
        ),
        (
            r"HAVANA-$\sigma$",
            head_test_embeddings(features, layout.head_file(ds, ex, settings.row_sigma, seed, "head"), "logvar"),
            lambda logvar: np.exp(0.5 * logvar),
        ),
    ]
    available = [data for _, data, _ in panels if data is not None]
    reference = available[0]
    pids = np.concatenate([reference.q_pids, reference.g_pids])
    ids = choose_identities(np.intersect1d(reference.q_pids, reference.g_pids), settings.num_ids, settings.seed)
    rows = identity_sample(pids, ids, settings.max_per_id, settings.seed)
    colors = plt.get_cmap("tab10" if len(ids) <= 10 else "tab20")
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=fig6_size())
        for ax, (title, data, transform) in zip(axes, panels):
            if data is None:
                no_data(ax, f"{title} ({ds}/{ex})")
                continue
            if not np.array_equal(np.concatenate([data.q_pids, data.g_pids]), pids):
                raise HavanaError(
                    f"the {title} embeddings of {ds}/{ex} do not list the same images as the features; "
                    "rerun the pipeline on the current features."
                )
            points = np.concatenate([data.query, data.gallery])[rows]
            points = transform(points) if transform is not None else points
            if len(rows) < 4:
                no_data(ax, f"{title}: fewer than 4 images of the chosen identities")
                continue
            xy = tsne_2d(points, settings.seed)
            for index, pid in enumerate(ids):
                mask = pids[rows] == pid
                ax.scatter(xy[mask, 0], xy[mask, 1], s=10, color=colors(index % colors.N), label=str(pid))
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
        handles, labels = next(
            ((ax.get_legend_handles_labels()) for ax in axes if ax.get_legend_handles_labels()[0]), ([], [])
        )
        if handles:
            fig.legend(handles, labels, title="identity", loc="center right", ncol=1)
        fig.suptitle(f"Fig. 6: t-SNE of {len(ids)} random identities ({dataset_title(ds)}, {ex}, {len(rows)} images)")
        fig.subplots_adjust(left=0.02, right=0.9, top=0.86, bottom=0.04, wspace=0.08)
        return save_png(fig, out)


# ---------------------------------------------------------------- Fig. 7: loss curves


def fig7_size() -> tuple[float, float]:
    return 11.0, 3.4


def fig7(config: Mapping[str, Any], settings: Fig7Config, layout: Layout, out: str | os.PathLike) -> Path:
    """L_klv, L_klz and L_reconz per epoch with and without the covariance constraint (mean over seeds, ±1 std band)."""
    seeds = config_seeds(config)
    runs = [("with CC", settings.with_c, HAVANA_COLOR), ("without CC", settings.without_c, BASELINE_COLOR)]
    histories = {row: read_histories(layout, settings.dataset, settings.extractor, row, seeds) for _, row, _ in runs}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(FIG7_TERMS), figsize=fig7_size())
        for ax, (term, title) in zip(axes, FIG7_TERMS):
            drawn = []
            for label, row, color in runs:
                band = loss_band(histories[row], term)
                if band is None:
                    continue
                epochs, mean, std = band
                ax.plot(epochs, mean, color=color, label=f"{label} ({row}, seeds: {len(histories[row])})")
                ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
                drawn.append(label)
            if not drawn:
                no_data(ax, f"{title} (term off or no history)")
                continue
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
            ax.legend()
        fig.suptitle(
            f"Fig. 7: loss curves with and without the covariance constraint "
            f"({dataset_title(settings.dataset)}, {settings.extractor})"
        )
        fig.subplots_adjust(left=0.06, right=0.99, top=0.84, bottom=0.15, wspace=0.25)
        return save_png(fig, out)


# ---------------------------------------------------------------- Fig. 8: alpha × beta bars


def fig8_size(num_datasets: int) -> tuple[float, float]:
    return 5.0 * max(1, num_datasets), 4.2


def fig8_grid(
    config: Mapping[str, Any], layout: Layout, settings: Fig8Config, dataset: str
) -> tuple[list[float], list[float], np.ndarray]:
    """The alpha × beta matrix of mean metric over seeds for one dataset (NaN where the grid has no row)."""
    from havana.models.head import resolve_row  # torch: imported to draw, not when the rules read FIGURES

    seeds = config_seeds(config)
    points = {
        row: (resolved.alpha, resolved.beta)
        for row in settings.rows
        for resolved in [resolve_row(config, row, dataset)]
    }
    values = {
        row: mean_metric(layout, dataset, settings.extractor, row, seeds, settings.metric) for row in settings.rows
    }
    return ab_grid(points, values)


def fig8(config: Mapping[str, Any], settings: Fig8Config, layout: Layout, out: str | os.PathLike) -> Path:
    """The metric over the alpha × beta grid, one heatmap per dataset with every cell's value written in it.

    The paper draws 3-D bars; a heatmap with values shows the same grid without a truncated height axis that would
    make a spread of one or two points look large. The colour scale spans each panel's own min..max, and the panel
    title states that spread in points."""
    grids = {dataset: fig8_grid(config, layout, settings, dataset) for dataset in settings.datasets}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1, len(settings.datasets), figsize=fig8_size(len(settings.datasets)), squeeze=False, layout="constrained"
        )
        for ax, dataset in zip(axes[0], settings.datasets):
            alphas, betas, grid = grids[dataset]
            if not np.isfinite(grid).any():
                no_data(ax, f"the α×β grid on {dataset}")
                continue
            low, high = float(np.nanmin(grid)), float(np.nanmax(grid))
            image = ax.imshow(
                np.ma.masked_invalid(grid.T),
                origin="lower",
                cmap="viridis",
                aspect="auto",
                vmin=low,
                vmax=high if high > low else low + 1e-6,
            )
            for a, b in np.ndindex(grid.shape):
                value = grid[a, b]
                shade = 0.0 if not np.isfinite(value) or high <= low else (value - low) / (high - low)
                ax.text(
                    a,
                    b,
                    "n/a" if not np.isfinite(value) else f"{value:.1f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if shade > 0.6 else "white" if np.isfinite(value) else "0.4",
                )
            ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
            ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
            ax.set_xlabel(r"$\alpha$ (ELBO weight)")
            ax.set_ylabel(r"$\beta$ (KL weight)")
            ax.set_title(
                f"{dataset_title(dataset)}: {settings.metric} {low:.1f}–{high:.1f} (spread {high - low:.1f} points)"
            )
            fig.colorbar(image, ax=ax, label=f"{settings.metric} (%)", shrink=0.9)
        fig.suptitle(f"Fig. 8: {settings.metric} over the α × β grid ({settings.extractor}, mean over seeds)")
        return save_png(fig, out)


# ---------------------------------------------------------------- Fig. 9: gain vs parameters


def fig9_size(num_datasets: int) -> tuple[float, float]:
    return 5.0 * max(1, num_datasets), 4.2


def fig9(config: Mapping[str, Any], settings: Fig9Config, layout: Layout, out: str | os.PathLike) -> Path:
    """mAP gain vs parameters relative to the first extractor's baseline: baselines (blue), HAVANA (red), SOTA
    (green)."""
    seeds = config_seeds(config)
    params = {extractor: extractor_test_parameters(config, extractor) for extractor in settings.extractors}
    panels = {}
    for dataset in settings.datasets:
        baseline = {e: mean_metric(layout, dataset, e, BASELINE, seeds) for e in settings.extractors}
        havana = {e: mean_metric(layout, dataset, e, settings.row, seeds) for e in settings.extractors}
        sota = settings.sota
        sota_point = (
            (sota.label, sota.params_m, sota.values[dataset])
            if sota and sota.params_m is not None and dataset in sota.values
            else None
        )
        panels[dataset] = fig9_points(settings.extractors, params, baseline, havana, sota_point)
    colors = {"baseline": BASELINE_COLOR, "havana": HAVANA_COLOR, "sota": SOTA_COLOR}
    names = {
        "baseline": "baseline",
        "havana": f"HAVANA ({settings.row})",
        "sota": f"{settings.sota.label} (SOTA)" if settings.sota else "SOTA",
    }
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1, len(settings.datasets), figsize=fig9_size(len(settings.datasets)), squeeze=False, layout="constrained"
        )  # titles, labels and the legend below the axes all fit
        for ax, dataset in zip(axes[0], settings.datasets):
            points = panels[dataset]
            if not points:
                no_data(ax, f"the {settings.extractors[0]} baseline on {dataset}")
                continue
            for series in ("baseline", "havana", "sota"):
                chosen = [p for p in points if p.series == series]
                if not chosen:
                    continue
                ax.plot(
                    [p.delta_params_m for p in chosen],
                    [p.gain for p in chosen],
                    marker="o" if series != "sota" else "*",
                    markersize=6 if series != "sota" else 12,
                    linestyle="-" if series != "sota" else "none",
                    color=colors[series],
                    label=names[series],
                )
                for p in chosen:
                    ax.annotate(
                        p.label.replace("bot_", ""),
                        (p.delta_params_m, p.gain),
                        textcoords="offset points",
                        xytext=(3, 3),
                        fontsize=6,
                    )
            origin = next(p for p in points if p.series == "baseline" and p.label == settings.extractors[0])
            ax.margins(x=0.15, y=0.1)
            ax.axhline(0, color="0.7", linewidth=0.8)
            ax.axvline(0, color="0.7", linewidth=0.8)
            ax.set_title(
                f"{dataset_title(dataset)}\norigin: {settings.extractors[0]} baseline, "
                f"{origin.params_m:.1f}M parameters, mAP {origin.map_percent:.1f}"
            )
            ax.set_xlabel("parameters increment (M)")
            ax.set_ylabel("mAP gain (points)")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)  # outside the data
        missing_sota = settings.sota is not None and settings.sota.params_m is None
        fig.suptitle(
            "Fig. 9: mAP gain against test-time parameters"
            + (f"\n({settings.sota.label} not drawn: its parameter count is not configured)" if missing_sota else "")
        )
        return save_png(fig, out)


@dataclass(frozen=True)
class Figure:
    """One figure this pipeline draws: its settings class (config `figures.<name>`) and drawing function."""

    settings: type
    draw: Callable[..., Path]


# The drawing function of every figure of layout.FIGURE_TITLES (tested: the same keys); the rules, the CLI's choices
# and the schema follow that list.
FIGURES: dict[str, Figure] = {
    "fig5": Figure(Fig5Config, fig5),
    "fig6": Figure(Fig6Config, fig6),
    "fig7": Figure(Fig7Config, fig7),
    "fig8": Figure(Fig8Config, fig8),
    "fig9": Figure(Fig9Config, fig9),
}


def settings(config: Mapping[str, Any], name: str) -> Any:
    """The typed `figures.<name>` section."""
    if name not in FIGURES:
        raise HavanaError(f"unknown figure '{name}'; choose one of {', '.join(FIGURES)}.")
    return from_mapping(FIGURES[name].settings, section(config, "figures", name), f"figures.{name}")


def active_settings(config: Mapping[str, Any], name: str) -> Any:
    """`figures.<name>` restricted to the active datasets; None when it draws none of them."""
    return settings(config, name).on(active_datasets(config))


def write_figure(config: Mapping[str, Any], name: str, out: str | os.PathLike, layout: Layout | None = None) -> Path:
    """Draw figure `name` (fig5 … fig9) to `out` from its declared reads (through `layout`, default the config's)."""
    layout = layout or Layout.of(config)
    chosen = active_settings(config, name)
    if chosen is None:
        raise HavanaError(
            f"figures.{name} draws no dataset of active_datasets ({', '.join(active_datasets(config))}); "
            "add its dataset there or drop the figure."
        )
    require(chosen.reads(layout, config_seeds(config)), f"figure {name}")
    return FIGURES[name].draw(config, chosen, layout, out)

"""Encode a head over a feature file and score it: the one place a head's embeddings are computed and ranked.

`havana evaluate` (metrics JSON per head and seed) and the figures that show a head (Figs. 5 and 6) call these
functions; `train_head` only trains. Nothing here claims a device: the caller passes the one it was granted (the
evaluate rule declares no GPU, so `havana evaluate` runs on CPU unless asked otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from havana.data.features import FeatureFile, FeatureSplit, read_features
from havana.errors import HavanaError
from havana.evaluation.rank import REPORTED_RANKS, EvaluationConfig, RerankConfig, evaluate, merge_flip
from havana.models.head import HavanaHead, load_head

ENCODE_CHUNK = 4096  # rows encoded by the head at once
TEST_SPLITS = ("query", "gallery")


@dataclass
class Encoded:
    """A head's output for every view of [N, V, D] features: z_mu [N, V, L] and, when asked for, z_logvar [N, V, L]
    (zero under the covariance constraint, where z_sigma = I)."""

    mu: np.ndarray
    logvar: np.ndarray | None = None


@torch.inference_mode()
def encode(
    head: HavanaHead, views: np.ndarray | torch.Tensor, device: torch.device | str = "cpu", *, logvar: bool = False
) -> Encoded:
    """z_mu (and z_logvar when `logvar`) of every view of `views` [N, V, D], as float32 arrays, ENCODE_CHUNK rows at a
    time on `device` (the head is moved there)."""
    head = head.to(device).eval()
    flat = torch.as_tensor(views).reshape(-1, views.shape[-1])
    mus, logvars = [], []
    for start in range(0, len(flat), ENCODE_CHUNK):
        z_mu, z_logvar = head.encode(flat[start : start + ENCODE_CHUNK].to(device, torch.float32))
        mus.append(z_mu.float().cpu())
        if logvar:
            logvars.append(z_logvar.float().cpu())
    shape = (views.shape[0], views.shape[1], -1)
    return Encoded(torch.cat(mus).reshape(shape).numpy(), torch.cat(logvars).reshape(shape).numpy() if logvar else None)


def check_test_views(name: str, split: FeatureSplit, path: str | os.PathLike) -> None:
    """HavanaError unless a test split holds [N, 2, D] (plain, flipped) features."""
    if split.features.shape[1] != 2 or len(split.features) == 0:
        raise HavanaError(
            f"the '{name}' split of {path} holds features of shape {split.features.shape}, not [N>0, 2, D] "
            "(plain, flipped); re-extract it with `havana extract`."
        )


def read_test_features(path: str | os.PathLike) -> FeatureFile:
    """The query and gallery splits of a feature file, checked to hold plain and flipped views."""
    data = read_features(path, splits=TEST_SPLITS)
    for name in TEST_SPLITS:
        check_test_views(name, data[name], path)
    return data


def load_head_for(
    head_path: str | os.PathLike,
    data: FeatureFile,
    features_path: str | os.PathLike,
    device: torch.device | str = "cpu",
) -> HavanaHead:
    """The head at `head_path`, checked to take the feature file's feature size."""
    head = load_head(head_path, map_location=device)
    dim = data["query"].features.shape[-1]
    if head.config.feature_dim != dim:
        raise HavanaError(
            f"head {head_path} takes {head.config.feature_dim}-d inputs but {features_path} holds "
            f"{dim}-d features; evaluate the head on its own extractor's features."
        )
    return head


def embed_test_splits(
    data: FeatureFile, head: HavanaHead | None, device: torch.device | str = "cpu", *, logvar: bool = False
) -> dict[str, Encoded]:
    """Query and gallery views as the head encodes them, or the raw features (logvar None) without a head."""
    if head is None:
        return {name: Encoded(data[name].features) for name in TEST_SPLITS}
    return {name: encode(head, data[name].features, device, logvar=logvar) for name in TEST_SPLITS}


AP_DECIMALS = 6  # per-query AP kept to 1e-6 (1e-4 points): the file stays small and no delta moves


def metrics_entry(result: dict[str, Any]) -> dict[str, Any]:
    """evaluate()'s result with R1/R5/R10 read off the CMC, as written to the metrics JSON; its "per_query" block
    (each valid query's index, AP and first-match rank) lets the tables put an interval on a difference between two
    rows (havana.report.bootstrap)."""
    per_query = result["per_query"]
    return {
        "mAP": result["mAP"],
        "mINP": result["mINP"],
        **{f"R{k}": result["cmc"][k - 1] for k in REPORTED_RANKS},
        "cmc": result["cmc"],
        "num_valid_queries": result["num_valid_queries"],
        "per_query": {
            "index": per_query["index"],
            "ap": [round(value, AP_DECIMALS) for value in per_query["ap"]],
            "first_match": per_query["first_match"],
        },
    }


def score(
    data: FeatureFile,
    embedded: dict[str, Encoded],
    settings: EvaluationConfig,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """{"plain": metrics of view 0, "flip": metrics of the mean of both views} of query against gallery."""
    query, gallery = data["query"], data["gallery"]
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    options = dict(
        metric=settings.metric,
        max_rank=settings.max_rank,
        rerank=RerankConfig() if settings.rerank else None,
        device=device,
    )
    label = lambda view: f"evaluate {view}" if progress else None  # the log says which ranking a line is about
    q, g = embedded["query"].mu, embedded["gallery"].mu
    return {
        "plain": metrics_entry(evaluate(q[:, 0], g[:, 0], *ids, progress=label("plain"), **options)),
        "flip": metrics_entry(evaluate(merge_flip(q), merge_flip(g), *ids, progress=label("flip"), **options)),
    }


@dataclass
class Scored:
    """What `score_data` measured and on what: metrics plus the facts its provenance records."""

    data: FeatureFile  # the query and gallery splits read
    metrics: dict[str, dict[str, Any]]  # {"plain": ..., "flip": ...}
    embedding_dim: int


def score_data(
    data: FeatureFile,
    head_path: str | os.PathLike | None,
    features_path: str | os.PathLike,
    settings: EvaluationConfig,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> Scored:
    """Encode a feature file's query and gallery, already read (`read_test_features`, so one job scores several heads on
    one read), with the head at `head_path` (raw features when None) on `device`, and score plain and flip-test
    embeddings under `settings`."""
    head = load_head_for(head_path, data, features_path, device) if head_path else None
    embedded = embed_test_splits(data, head, device)
    return Scored(data, score(data, embedded, settings, device, progress), int(embedded["query"].mu.shape[-1]))

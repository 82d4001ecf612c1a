"""Sparse, chunked k-reciprocal re-ranking against a dense loop-per-item implementation of Zhong et al. (2017)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reid_reference import reference_evaluate

from havana.errors import HavanaError
from havana.evaluation import reranking
from havana.evaluation.rank import evaluate
from havana.evaluation.reranking import RerankConfig, k_reciprocal_distance, rerank_distance_chunks


def dense_rerank(qf: np.ndarray, gf: np.ndarray, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    """The paper's algorithm on full matrices: R(i,k1), its 2/3-overlap expansion with R(c,k1/2), Gaussian-kernel
    vectors V, local query expansion over k2 neighbours, Jaccard = 1 - sum(min)/sum(max), mixed with the row-max
    normalised squared Euclidean distance."""
    feats = np.concatenate([qf, gf]).astype(np.float64)
    n, num_query = len(feats), len(qf)
    dist = ((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1)
    dist /= dist.max(axis=1, keepdims=True)
    rank = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(i: int, k: int) -> np.ndarray:
        return np.array([j for j in rank[i, : k + 1] if i in rank[j, : k + 1]])

    encodings = np.zeros((n, n))
    for i in range(n):
        base = reciprocal(i, k1)
        expanded = set(base.tolist())
        for candidate in base:
            candidate_set = reciprocal(candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(candidate_set, base)) > 2 / 3 * len(candidate_set):
                expanded |= set(candidate_set.tolist())
        members = np.array(sorted(expanded))
        weight = np.exp(-dist[i, members])
        encodings[i, members] = weight / weight.sum()
    if k2 != 1:
        encodings = np.stack([encodings[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.array(
        [
            [
                1 - np.minimum(encodings[i], encodings[j]).sum() / np.maximum(encodings[i], encodings[j]).sum()
                for j in range(n)
            ]
            for i in range(num_query)
        ]
    )
    return ((1 - lambda_value) * jaccard + lambda_value * dist[:num_query])[:, num_query:]


def clustered_problem(seed: int, num_query: int = 10, num_gallery: int = 50, dim: int = 8, num_ids: int = 6):
    """Continuous features around a few identity centres (no ties), so neighbourhoods are non-trivial."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim)) * 2
    q_pids, g_pids = rng.integers(0, num_ids, num_query), rng.integers(0, num_ids, num_gallery)
    qf = (centres[q_pids] + rng.normal(size=(num_query, dim))).astype(np.float32)
    gf = (centres[g_pids] + rng.normal(size=(num_gallery, dim))).astype(np.float32)
    return qf, gf, q_pids, g_pids


@pytest.mark.parametrize("seed,k1,k2,lambda_value", [(0, 20, 6, 0.3), (1, 5, 3, 0.3), (2, 7, 1, 0.5), (3, 4, 5, 0.0)])
def test_sparse_rerank_equals_dense_algorithm(seed, k1, k2, lambda_value):
    qf, gf, _, _ = clustered_problem(seed)
    want = dense_rerank(qf, gf, k1, k2, lambda_value)
    got = k_reciprocal_distance(torch.as_tensor(qf), torch.as_tensor(gf), RerankConfig(k1, k2, lambda_value))
    np.testing.assert_allclose(got.numpy(), want, atol=2e-6)


def test_chunking_does_not_change_the_reranked_distance(monkeypatch):
    qf, gf, _, _ = clustered_problem(4)
    qf, gf = torch.as_tensor(qf), torch.as_tensor(gf)
    whole = torch.cat([b for _, b in rerank_distance_chunks(qf, gf, RerankConfig(), chunk_size=100)])
    pieces = torch.cat([b for _, b in rerank_distance_chunks(qf, gf, RerankConfig(), chunk_size=3)])
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-7)
    monkeypatch.setattr(reranking, "TERMS_PER_STEP", 50)  # the Jaccard join one or two queries at a time
    monkeypatch.setattr(reranking, "PAIRS_PER_CHUNK", 7)
    joined_in_steps = torch.cat([b for _, b in rerank_distance_chunks(qf, gf, RerankConfig(), chunk_size=100)])
    torch.testing.assert_close(joined_in_steps, whole, rtol=0, atol=1e-7)


def test_evaluate_with_rerank_drops_junk_before_the_neighbour_graph():
    """As torchreid and fast-reid do: junk (pid -1) never enters the k-reciprocal graph, so it cannot shape the
    neighbourhoods of the entries that are ranked. Oracle: the dense algorithm on the junk-free gallery."""
    qf, gf, q_pids, g_pids = clustered_problem(5, num_query=12, num_gallery=60)
    rng = np.random.default_rng(5)
    q_camids, g_camids = rng.integers(0, 12, len(qf)), rng.integers(0, 12, len(gf))
    g_pids = np.where(rng.random(len(gf)) < 0.25, -1, g_pids)
    kept = g_pids != -1
    reranked = dense_rerank(qf, gf[kept], 20, 6, 0.3)
    want = reference_evaluate(reranked, q_pids, g_pids[kept], q_camids, g_camids[kept], max_rank=10)
    got = evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, max_rank=10, rerank=RerankConfig(), chunk_size=5)
    assert got["num_valid_queries"] == want["num_valid_queries"]
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-6)
    assert got["mINP"] == pytest.approx(want["mINP"], abs=1e-6)
    assert got["cmc"] == want["cmc"]
    with_junk = dense_rerank(qf, gf, 20, 6, 0.3)  # the old behaviour: junk inside the graph changes the metrics
    assert reference_evaluate(with_junk, q_pids, g_pids, q_camids, g_camids, max_rank=10)["mAP"] != pytest.approx(
        want["mAP"], abs=1e-6
    )


@pytest.mark.parametrize("bad", [dict(k1=0), dict(k2=0), dict(k1=3, k2=5), dict(lambda_value=1.5)])
def test_bad_settings_are_clear_errors(bad):
    with pytest.raises(HavanaError):
        RerankConfig(**bad)


def test_too_few_items_for_k1_is_a_clear_error():
    with pytest.raises(HavanaError, match="needs more than 20"):
        k_reciprocal_distance(torch.zeros(3, 2), torch.ones(5, 2))

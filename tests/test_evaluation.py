"""evaluate(), merge_flip(), topk_indices() and pairwise_distance() against a plain per-query reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reid_reference import reference_evaluate
from scipy.spatial.distance import cdist

from havana.errors import HavanaError
from havana.evaluation import rank
from havana.evaluation.distance import row_groups
from havana.evaluation.rank import evaluate, merge_flip, pairwise_distance, topk_indices


def random_problem(
    seed: int, num_query: int = 40, num_gallery: int = 300, dim: int = 4, num_ids: int = 25, num_cams: int = 14
):
    """Small-integer features (exact distances, many ties) with junk (-1), distractors (0), pid 0 also as a query
    identity, > 10 cameras, query ids absent from the gallery and ids whose only gallery images share the camera."""
    rng = np.random.default_rng(seed)
    qf = rng.integers(-2, 3, size=(num_query, dim)).astype(np.float32)
    gf = rng.integers(-2, 3, size=(num_gallery, dim)).astype(np.float32)
    q_pids = rng.integers(0, num_ids + 3, size=num_query)  # ids >= num_ids never appear in the gallery
    g_pids = rng.integers(-1, num_ids, size=num_gallery)  # -1 junk, 0 distractor-or-identity
    q_camids = rng.integers(0, num_cams, size=num_query)
    g_camids = rng.integers(0, num_cams, size=num_gallery)
    lonely = q_pids[0]  # an identity seen by the gallery only from the query's own camera
    g_camids[g_pids == lonely] = q_camids[0]
    q_camids[q_pids == lonely] = q_camids[0]
    return qf, gf, q_pids, g_pids, q_camids, g_camids


def exact_sq_euclidean(qf: np.ndarray, gf: np.ndarray) -> np.ndarray:
    return ((qf.astype(np.float64)[:, None, :] - gf.astype(np.float64)[None, :, :]) ** 2).sum(-1)


def assert_same_metrics(got: dict, want: dict) -> None:
    assert got["num_valid_queries"] == want["num_valid_queries"]
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-6)
    assert got["mINP"] == pytest.approx(want["mINP"], abs=1e-6)
    assert got["cmc"] == want["cmc"]
    assert got["per_query"]["index"] == want["per_query"]["index"]
    assert got["per_query"]["first_match"] == want["per_query"]["first_match"]
    assert got["per_query"]["ap"] == pytest.approx(want["per_query"]["ap"], abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_matches_per_query_reference_with_ties_junk_distractors_and_many_cameras(seed):
    qf, gf, q_pids, g_pids, q_camids, g_camids = random_problem(seed)
    want = reference_evaluate(exact_sq_euclidean(qf, gf), q_pids, g_pids, q_camids, g_camids)
    assert 0 < want["num_valid_queries"] < len(qf)  # some queries have no valid match and are skipped
    got = evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids)
    assert_same_metrics(got, want)


def test_problem_really_has_every_edge_case():
    qf, gf, q_pids, g_pids, q_camids, g_camids = random_problem(0)
    dist = exact_sq_euclidean(qf, gf)
    assert (g_pids == -1).any() and (g_pids == 0).any() and (q_pids == 0).any()
    assert max(q_camids.max(), g_camids.max()) >= 10
    assert any(len(np.unique(row)) < len(row) for row in dist)  # tied distances


@pytest.mark.parametrize("seed", range(3))
def test_cosine_matches_reference_on_its_own_distances(seed):
    rng = np.random.default_rng(seed)
    qf, gf, q_pids, g_pids, q_camids, g_camids = random_problem(seed)
    qf, gf = qf + rng.normal(size=qf.shape).astype(np.float32), gf + rng.normal(size=gf.shape).astype(np.float32)
    dist = pairwise_distance(qf, gf, "cosine").numpy()
    got = evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="cosine", max_rank=20)
    assert_same_metrics(got, reference_evaluate(dist, q_pids, g_pids, q_camids, g_camids, max_rank=20))


def test_pairwise_distance_agrees_with_scipy():
    rng = np.random.default_rng(3)
    qf, gf = rng.normal(size=(7, 16)), rng.normal(size=(11, 16))
    np.testing.assert_allclose(
        pairwise_distance(qf, gf, "euclidean", chunk_size=3).numpy(), cdist(qf, gf, "sqeuclidean"), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(pairwise_distance(qf, gf, "cosine").numpy(), cdist(qf, gf, "cosine"), atol=1e-6)
    assert (pairwise_distance(qf, qf).numpy() >= 0).all()  # the diagonal's rounding is clamped at 0


def test_cosine_and_euclidean_rank_normalised_features_alike():
    rng = np.random.default_rng(4)
    _, _, q_pids, g_pids, q_camids, g_camids = random_problem(4)
    qf, gf = rng.normal(size=(len(q_pids), 32)), rng.normal(size=(len(g_pids), 32))
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    assert_same_metrics(
        evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="cosine"),
        evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="euclidean"),
    )


def test_numpy_torch_and_float64_inputs_agree():
    problem = random_problem(5)
    want = evaluate(*problem)
    assert_same_metrics(evaluate(*(torch.as_tensor(a) for a in problem)), want)
    qf, gf, *ids = problem
    assert_same_metrics(evaluate(qf.astype(np.float64), gf.astype(np.float64), *ids), want)


@pytest.mark.parametrize("chunk_size", [1, 3, 17, 1000])
def test_chunk_size_does_not_change_results(chunk_size):
    problem = random_problem(6)
    assert_same_metrics(evaluate(*problem, chunk_size=chunk_size), evaluate(*problem))


def test_candidates_processed_in_small_groups_give_the_same_results(monkeypatch):
    problem = random_problem(9)
    want = evaluate(*problem)
    monkeypatch.setattr(rank, "SURVIVORS_PER_STEP", 5)  # forces many row groups per chunk
    assert_same_metrics(evaluate(*problem), want)
    assert row_groups([3, 1, 3, 10, 1], 5) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert row_groups([3, 1], 5) == [(0, 2)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    problem = random_problem(7)
    assert_same_metrics(evaluate(*problem, device="cuda"), evaluate(*problem))


def test_hand_computed_ap_inp_and_cmc():
    # 1-D features; query 0 is pid 1 on camera 0 at x=0. Ranked kept gallery: g0 (x=1, other id), g1 (x=2, match),
    # g4 (x=4, distractor), g6 (x=4.5, other id), g5 (x=5, match); g2 (junk) and g3 (same pid+camera) are removed.
    # Query 1 (pid 7) has no gallery match and is skipped.
    gf = np.array([[1.0], [2.0], [3.0], [3.5], [4.0], [5.0], [4.5]])
    g_pids = np.array([2, 1, -1, 1, 0, 1, 3])
    g_camids = np.array([1, 1, 1, 0, 1, 2, 1])
    qf = np.array([[0.0], [0.0]])
    result = evaluate(qf, gf, np.array([1, 7]), g_pids, np.array([0, 0]), g_camids, max_rank=6)
    assert result["num_valid_queries"] == 1
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 5) / 2)
    assert result["mINP"] == pytest.approx(2 / 5)
    assert result["cmc"] == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_equal_distances_rank_the_lower_gallery_index_first():
    qf = np.zeros((1, 2))
    gf = np.array([[1.0, 0.0], [0.0, 1.0]])  # both at distance 1 from the query
    other_first = evaluate(qf, gf, [1], [5, 1], [0], [1, 1])
    match_first = evaluate(qf, gf, [1], [1, 5], [0], [1, 1])
    assert (other_first["mAP"], other_first["cmc"][0]) == (0.5, 0.0)
    assert (match_first["mAP"], match_first["cmc"][0]) == (1.0, 1.0)


def test_pid_zero_query_matches_pid_zero_gallery():
    result = evaluate(np.zeros((1, 1)), np.array([[1.0], [2.0]]), [0], [3, 0], [0], [1, 1], max_rank=2)
    assert (result["mAP"], result["cmc"]) == (0.5, [0.0, 1.0])


def test_cmc_has_max_rank_entries_even_beyond_the_gallery():
    result = evaluate(np.zeros((1, 1)), np.array([[1.0]]), [1], [1], [0], [1], max_rank=50)
    assert result["cmc"] == [1.0] * 50


def test_no_valid_query_is_a_clear_error():
    with pytest.raises(HavanaError, match="no query has a true match"):
        evaluate(np.zeros((2, 3)), np.ones((4, 3)), [1, 2], [1, 2, -1, 3], [0, 0], [0, 0, 1, 1])


@pytest.mark.parametrize(
    "bad",
    [
        dict(gallery_features=np.ones((4, 2))),  # dimension mismatch
        dict(query_pids=[1]),  # too few pids
        dict(query_features=np.full((2, 3), np.nan)),
        dict(metric="manhattan"),
        dict(max_rank=0),
    ],
)
def test_bad_inputs_are_clear_errors(bad):
    args = dict(
        query_features=np.zeros((2, 3)),
        gallery_features=np.ones((4, 3)),
        query_pids=[1, 2],
        gallery_pids=[1, 2, 1, 2],
        query_camids=[0, 0],
        gallery_camids=[1, 1, 1, 1],
    )
    args.update(bad)
    with pytest.raises(HavanaError):
        evaluate(**args)


def test_merge_flip_is_the_mean_of_both_views():
    views = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    np.testing.assert_array_equal(merge_flip(views), (views[:, 0] + views[:, 1]) / 2)
    torch.testing.assert_close(merge_flip(torch.as_tensor(views)), torch.as_tensor((views[:, 0] + views[:, 1]) / 2))
    with pytest.raises(HavanaError, match=r"\[N, 2, D\]"):
        merge_flip(views[:, :1])


def test_topk_indices_follow_the_ranking_rule_and_the_protocol():
    qf, gf, q_pids, g_pids, q_camids, g_camids = random_problem(8)
    dist = exact_sq_euclidean(qf, gf)
    plain = topk_indices(qf, gf, 10, chunk_size=7)
    np.testing.assert_array_equal(plain, np.argsort(dist, axis=1, kind="stable")[:, :10])
    filtered = topk_indices(qf, gf, 10, q_pids=q_pids, g_pids=g_pids, q_camids=q_camids, g_camids=g_camids)
    for i, row in enumerate(filtered):
        order = np.argsort(dist[i], kind="stable")
        junk = (g_pids[order] == -1) | ((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        np.testing.assert_array_equal(row, order[~junk][:10])
    assert topk_indices(qf[:1], gf[:3], 5).shape == (1, 3)  # only three gallery entries exist
    padded = topk_indices(qf[:1], gf[:3], 5, q_pids=[1], g_pids=[1, -1, 2], q_camids=[0], g_camids=[0, 1, 1])
    np.testing.assert_array_equal(padded, [[2, -1, -1]])  # same pid+camera and junk removed

"""The paired bootstrap of a difference between two table cells against a plain loop on the same draws and against the
exact bootstrap distribution, enumerated on a small case."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from havana.errors import HavanaError
from havana.report import bootstrap
from havana.report.bootstrap import Difference, cell_difference, draws, paired_difference, query_scores, replicates_of


def scores(seed: int, seeds: int = 2, queries: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    before = rng.uniform(0, 100, size=(seeds, queries))
    return before + rng.normal(1.0, 5.0, size=(seeds, queries)), before


def loop_replicates(differences: np.ndarray, replicates: int, seed: int) -> list[float]:
    """The scheme as a loop: for each replicate, the mean over its drawn seeds of the mean over its drawn queries."""
    seeds, queries = differences.shape
    values = []
    for seed_positions, query_positions in draws(seeds, queries, replicates, seed):
        for drawn_seeds, drawn_queries in zip(seed_positions, query_positions):
            total = 0.0
            for s in drawn_seeds:
                total += sum(differences[s, q] for q in drawn_queries) / len(drawn_queries)
            values.append(total / len(drawn_seeds))
    return values


def test_replicates_equal_a_plain_loop_on_the_same_draws(monkeypatch):
    monkeypatch.setattr(bootstrap, "GATHER_ELEMENTS", 64)  # several blocks of replicates
    after, before = scores(1, seeds=3, queries=7)
    got = replicates_of(after - before, replicates=50, seed=3)
    assert got.shape == (50,)
    np.testing.assert_allclose(got, loop_replicates(after - before, 50, 3), rtol=1e-12)


def test_the_same_seed_gives_the_same_interval_and_the_estimate_is_the_difference_of_means():
    after, before = scores(2)
    first, again = paired_difference(after, before), paired_difference(after, before)
    assert first == again
    assert first.estimate == pytest.approx(after.mean() - before.mean())
    assert first.low < first.estimate < first.high
    assert paired_difference(after, before, seed=1) != first


def test_the_interval_matches_the_exact_bootstrap_distribution_enumerated():
    """S=2 seeds, Q=4 queries: all 2**2 · 4**4 = 1024 equally likely resamples, their 2.5% and 97.5% quantiles."""
    after, before = scores(3, seeds=2, queries=4)
    d = after - before
    exact = [
        np.mean([d[s, list(qs)].mean() for s in ss])
        for ss in itertools.product(range(2), repeat=2)
        for qs in itertools.product(range(4), repeat=4)
    ]
    low, high = np.quantile(exact, [0.025, 0.975])
    got = paired_difference(after, before, replicates=40000)
    spread = float(np.std(exact))
    assert got.low == pytest.approx(low, abs=0.05 * spread)
    assert got.high == pytest.approx(high, abs=0.05 * spread)
    assert np.mean(replicates_of(d, 40000)) == pytest.approx(np.mean(exact), abs=0.02 * spread)


def test_resolved_when_the_interval_excludes_zero():
    assert Difference(1.0, 0.2, 1.8).resolved and Difference(-1.0, -1.8, -0.1).resolved
    assert not Difference(0.5, -0.2, 1.1).resolved
    same = np.full((2, 30), 50.0)
    assert not paired_difference(same, same).resolved  # an interval of exactly [0, 0] resolves nothing


def block(ap, first, index=None) -> dict:
    return {"per_query": {"index": index or list(range(len(ap))), "ap": ap, "first_match": first}}


def test_per_query_scores_of_each_metric():
    plain = block([0.5, 1.0, 0.25], [3, 0, 7])
    index, ap = query_scores(plain, "mAP")
    assert index == [0, 1, 2] and ap.tolist() == [50.0, 100.0, 25.0]
    assert query_scores(plain, "R1")[1].tolist() == [0.0, 100.0, 0.0]
    assert query_scores(plain, "R5")[1].tolist() == [100.0, 100.0, 0.0]
    assert query_scores(plain, "R10")[1].tolist() == [100.0, 100.0, 100.0]
    assert query_scores(plain, "mINP") is None and query_scores({"mAP": 0.5}, "mAP") is None


def test_a_cell_difference_pairs_seeds_and_queries():
    after = {0: block([1.0, 0.5], [0, 1]), 1: block([1.0, 1.0], [0, 0]), 2: block([0.0, 0.0], [9, 9])}
    before = {0: block([0.5, 0.5], [1, 1]), 1: block([0.5, 1.0], [1, 0])}  # seed 2 missing: pairs over 0 and 1
    got = cell_difference(after, before, "mAP", "here")
    assert got.estimate == pytest.approx(100 * np.mean([0.5, 0.0, 0.5, 0.0]))
    assert cell_difference(after, {0: {"mAP": 0.5}}, "mAP", "here") is None  # written before per-query scores
    shifted = {0: block([0.5, 0.5], [1, 1], index=[0, 2]), 1: block([0.5, 1.0], [1, 0])}
    with pytest.raises(HavanaError, match="different queries"):
        cell_difference(after, shifted, "mAP", "here")

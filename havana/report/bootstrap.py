"""A 95% interval for the difference between two table cells: a paired bootstrap over queries and seeds.

A cell is the mean over seeds s of the mean over queries q of a per-query score x[s, q] in percent: 100·AP for mAP,
100·[first match within the top k] for R-k (each query's AP and first-match rank are kept by `havana evaluate`,
havana.evaluation.rank). Two cells on one dataset rank the same queries, so they are paired by query, and by seed
number. With d[s, q] = x_after[s, q] − x_before[s, q] over the S seeds both cells have and the Q queries, the
difference is the mean of d (the difference of the two cells' means when both have every seed).

Resampling scheme, stated exactly: each of `REPLICATES` replicates draws S seed positions with replacement from the
S seeds and, independently, Q query positions with replacement from the Q queries (`draws`: per block of replicates,
first the seed positions [b, S], then the query positions [b, Q], from numpy.random.default_rng(seed)); the drawn
queries serve every drawn seed and both cells (the pairing), and the replicate is the mean of d over the drawn seeds ×
the drawn queries. The interval is the 2.5th and 97.5th percentiles of the replicates (percentile bootstrap, numpy's
linear interpolation). The same inputs and seed give the same interval. A difference is resolved when its interval
excludes 0. Seeds resampled with the queries carry the training noise (one seed: queries only).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from havana.errors import HavanaError

REPLICATES = 2000  # bootstrap replicates per difference
SEED = 0  # the generator's seed: a table is the same every time it is rendered
LEVEL = 0.95
GATHER_ELEMENTS = 1 << 22  # seeds × replicates × queries gathered at once (bounds memory for MSMT17's 11659 queries)


@dataclass(frozen=True)
class Difference:
    """after − before in points, with its bootstrap interval."""

    estimate: float
    low: float
    high: float

    @property
    def resolved(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0.0 or self.high < 0.0


def query_scores(block: Mapping[str, Any], metric: str) -> tuple[list[int], np.ndarray] | None:
    """(query indices, per-query score in percent) of `metric` from a metrics JSON block ("plain" or "flip"); None
    when the block keeps no per-query results (written before they were kept) or the metric has no per-query score
    kept (mINP)."""
    per_query = block.get("per_query") if isinstance(block, Mapping) else None
    if not isinstance(per_query, Mapping) or metric == "mINP":
        return None
    if metric == "mAP":
        return list(per_query["index"]), 100.0 * np.asarray(per_query["ap"], dtype=np.float64)
    k = int(metric[1:])  # R1, R5, R10
    return list(per_query["index"]), 100.0 * (np.asarray(per_query["first_match"]) < k)


def draws(seeds: int, queries: int, replicates: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The resampled (seed positions [b, S], query positions [b, Q]) of consecutive blocks of replicates."""
    rng = np.random.default_rng(seed)
    block = max(1, GATHER_ELEMENTS // (seeds * queries))
    for start in range(0, replicates, block):
        count = min(block, replicates - start)
        yield rng.integers(0, seeds, size=(count, seeds)), rng.integers(0, queries, size=(count, queries))


def replicates_of(differences: np.ndarray, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
    """Every replicate's mean of d [S, Q] over its drawn seeds × drawn queries (module docstring)."""
    seeds, queries = differences.shape
    values = []
    for seed_positions, query_positions in draws(seeds, queries, replicates, seed):
        per_seed = differences[:, query_positions].mean(axis=2).T  # [b, S]: each seed's mean over the drawn queries
        values.append(np.take_along_axis(per_seed, seed_positions, axis=1).mean(axis=1))
    return np.concatenate(values)


def paired_difference(
    after: np.ndarray, before: np.ndarray, replicates: int = REPLICATES, seed: int = SEED
) -> Difference:
    """after − before of two cells given as per-query scores [S, Q] (same seeds, same queries, in order)."""
    after, before = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if after.shape != before.shape or after.ndim != 2 or 0 in after.shape:
        raise HavanaError(
            f"a paired difference needs two [seeds, queries] arrays of one shape, got {after.shape} and {before.shape}."
        )
    differences = after - before
    low, high = np.quantile(replicates_of(differences, replicates, seed), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Difference(float(differences.mean()), float(low), float(high))


def cell_difference(
    after: Mapping[int, Mapping[str, Any]], before: Mapping[int, Mapping[str, Any]], metric: str, where: str
) -> Difference | None:
    """after − before of one metric, from the metrics blocks of each cell by seed (the seeds both have); None when a
    block keeps no per-query scores. `where` names the pair in the error when the two cells ranked other queries."""
    seeds = sorted(set(after) & set(before))
    rows: list[list[np.ndarray]] = [[], []]
    reference: list[int] | None = None
    for seed in seeds:
        for side, blocks in enumerate((after, before)):
            found = query_scores(blocks[seed], metric)
            if found is None:
                return None
            index, scores = found
            if reference is None:
                reference = index
            elif index != reference:
                raise HavanaError(
                    f"{where}: the two cells' metrics rank different queries, so they cannot be paired; rerun their "
                    "evaluate jobs on the same feature files."
                )
            rows[side].append(scores)
    if not seeds:
        return None
    return paired_difference(np.stack(rows[0]), np.stack(rows[1]))

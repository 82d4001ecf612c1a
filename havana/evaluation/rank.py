"""Re-ID evaluation under the Market-1501 protocol: CMC, mAP and mINP, exact, chunked over queries, numpy or torch.

Protocol (torchreid / reid-strong-baseline): for each query, gallery entries with pid -1 (junk) and entries with the
query's pid AND camera are removed; everything else, pid 0 distractors included, is ranked by distance; a query with
no remaining true match is skipped. AP is the mean of the precision at each true match; INP (fast-reid) is the number
of true matches divided by the rank of the last one; CMC[k-1] is the fraction of queries with a true match in the top k.

Ranking rule, stated exactly: distances are float32 (see havana.evaluation.distance) and ascending; at EQUAL distance
the lower
gallery index comes first, i.e. the order `numpy.argsort(distances, kind="stable")` gives. Ranks are exact under it.

Speed: no gallery row is sorted. Only each true match's rank is needed, and that is (its position among the query's
true matches) + (the number of kept non-matches before it). Entries farther than the query's last true match cannot
precede any match, so one comparison pass drops them; the survivors (a few per query for a trained model, all G in the
worst case of random features) get exact (row, distance, index) integer keys that are bucketed against the sorted
true-match keys with searchsorted and counted with a cumulative sum. Memory: one chunk of about 2**25 distances at a
time (havana.evaluation.distance.CHUNK_ELEMENTS), whatever the problem size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from havana.config import Limit, at_least
from havana.errors import HavanaError
from havana.evaluation.distance import (
    DistanceFunction,
    as_tensor,
    check_metric,
    chunk_rows,
    pairwise_distance,
    ranking_keys,
    row_groups,
    sortable_bits,
)
from havana.evaluation.reranking import RerankConfig, rerank_distance_chunks
from havana.utils.progress import progress as shown_progress

__all__ = ["EvaluationConfig", "RerankConfig", "evaluate", "merge_flip", "pairwise_distance", "topk_indices"]

JUNK_PID = -1
SURVIVORS_PER_STEP = 1 << 22  # candidate entries keyed at once (bounds memory when a poor model leaves many)
REPORTED_RANKS = (1, 5, 10)  # reported as R1, R5, R10 beside the full CMC, so the CMC must reach the last


@dataclass
class EvaluationConfig:
    """How embeddings are ranked (config section `evaluation`)."""

    metric: str = "cosine"  # "cosine" (= L2 on normalised features, BoT's FEAT_NORM yes) or "euclidean" (squared L2)
    max_rank: int = 50  # CMC is reported up to this rank
    rerank: bool = False  # k-reciprocal re-ranking with RerankConfig's defaults (k1 20, k2 6, lambda 0.3)

    LIMITS: ClassVar[dict[str, Limit]] = {"max_rank": at_least(max(REPORTED_RANKS))}

    def __post_init__(self) -> None:
        check_metric(self.metric)


_FLOAT_BITS = 31  # a non-negative float32 read as int32 is below 2**31 and orders like the float


def _keys(rows: torch.Tensor, distances: torch.Tensor, columns: torch.Tensor, column_bits: int) -> torch.Tensor:
    """Unique int64 keys ordered by (row, distance, column): the protocol's ranking order inside each row."""
    keys = sortable_bits(distances)
    keys <<= column_bits
    return keys.bitwise_or_(columns).bitwise_or_(rows << (_FLOAT_BITS + column_bits))


@dataclass
class _GalleryIndex:
    """The kept (non-junk) gallery grouped by identity, so a query's same-pid columns are found without a scan."""

    pids: torch.Tensor  # [G'] pids of the kept gallery entries
    camids: torch.Tensor  # [G'] cameras of the kept gallery entries
    by_pid: torch.Tensor  # [G'] kept columns sorted by pid (stable)
    unique_pids: torch.Tensor  # [U] the distinct pids, ascending
    starts: torch.Tensor  # [U] where each pid's columns start in by_pid
    counts: torch.Tensor  # [U] how many kept columns each pid has
    column_bits: int  # bits needed for a kept column index
    max_chunk_rows: int  # rows a chunk may hold so that (row, distance, column) fits one int64 key

    @classmethod
    def build(cls, pids: torch.Tensor, camids: torch.Tensor) -> _GalleryIndex:
        """Index the kept gallery's pids and cameras (both already on the evaluation device)."""
        by_pid = torch.sort(pids, stable=True).indices
        unique_pids, counts = torch.unique_consecutive(pids[by_pid], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        column_bits = max(1, (len(pids) - 1).bit_length())
        if column_bits > 31:
            raise HavanaError(f"a gallery of {len(pids)} entries is larger than the 2**31 this evaluator supports.")
        return cls(pids, camids, by_pid, unique_pids, starts, counts, column_bits, 1 << (32 - column_bits))


@dataclass
class _ChunkResult:
    """Per-query outcomes of one chunk, for the valid queries only (CPU, float64 where fractional)."""

    query: np.ndarray  # row of each valid query within the chunk
    average_precision: np.ndarray
    inverse_negative_penalty: np.ndarray
    first_rank: np.ndarray  # 0-based rank of the first true match


def _score_chunk(
    dist: torch.Tensor, q_pids: torch.Tensor, q_camids: torch.Tensor, gallery: _GalleryIndex
) -> _ChunkResult:
    """AP, INP and first-match rank of each valid query of a [b, G'] block of non-negative distances over the kept
    gallery (the block is overwritten)."""
    rows_in_chunk, columns_in_chunk = dist.shape
    device = dist.device
    empty = _ChunkResult(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
    if len(gallery.unique_pids) == 0:
        return empty
    # Columns of the query's identity (matches, and same-camera junk), padded to the chunk's widest identity.
    slot_of_pid = torch.searchsorted(gallery.unique_pids, q_pids).clamp_max_(len(gallery.unique_pids) - 1)
    found = gallery.unique_pids[slot_of_pid] == q_pids
    same_pid_count = torch.where(found, gallery.counts[slot_of_pid], 0)
    width = int(same_pid_count.max())
    if width == 0:
        return empty
    slot = torch.arange(width, device=device)
    in_row = slot[None, :] < same_pid_count[:, None]
    offsets = (gallery.starts[slot_of_pid][:, None] + slot[None, :]).clamp_max_(len(gallery.by_pid) - 1)
    same_pid_columns = gallery.by_pid[offsets]
    is_match = in_row & (gallery.camids[same_pid_columns] != q_camids[:, None])
    match_count = is_match.sum(dim=1)
    match_dist = dist.gather(1, same_pid_columns)
    last_match_dist = torch.where(is_match, match_dist, float("-inf")).amax(dim=1)

    # Sorted true-match keys of the whole chunk: row-major, so each row's matches form one sorted segment.
    row_grid = torch.arange(rows_in_chunk, device=device)[:, None].expand(-1, width)
    match_keys = torch.sort(
        _keys(row_grid[is_match], match_dist[is_match], same_pid_columns[is_match], gallery.column_bits)
    ).values
    segment_start = torch.cumsum(match_count, 0) - match_count
    segment_end = segment_start + match_count

    # Other identities no farther than the row's last match: the only entries that can precede a true match.
    dist[row_grid[in_row], same_pid_columns[in_row]] = float("inf")
    candidates = dist <= last_match_dist[:, None]
    total = len(match_keys)
    counts = torch.zeros(total, dtype=torch.int64, device=device)
    for first_row, last_row in row_groups(candidates.sum(dim=1).tolist(), SURVIVORS_PER_STEP):
        flat = torch.nonzero(candidates[first_row:last_row].reshape(-1)).squeeze(1)
        local_rows = torch.div(flat, columns_in_chunk, rounding_mode="floor")
        rows = local_rows + first_row
        values = dist[first_row:last_row].reshape(-1)[flat]
        other_keys = _keys(rows, values, flat - local_rows * columns_in_chunk, gallery.column_bits)
        bucket = torch.searchsorted(match_keys, other_keys)  # index of the first match this entry precedes
        counts += torch.bincount(bucket[bucket < segment_end[rows]], minlength=total)
    preceding = torch.zeros(total + 1, dtype=torch.int64, device=device)
    preceding[1:] = torch.cumsum(counts, 0)

    match_row = torch.repeat_interleave(torch.arange(rows_in_chunk, device=device), match_count)
    position = torch.arange(total, device=device) - segment_start[match_row]
    rank = position + preceding[1:] - preceding[segment_start[match_row]]  # 0-based rank among kept entries
    precision = (position + 1).double() / (rank + 1).double()
    ap_sum = torch.zeros(rows_in_chunk, dtype=torch.float64, device=device).index_add_(0, match_row, precision)

    valid = match_count > 0
    count = match_count[valid]
    first = rank[segment_start[valid]]
    last = rank[segment_end[valid] - 1]
    return _ChunkResult(
        query=torch.nonzero(valid).squeeze(1).cpu().numpy(),
        average_precision=(ap_sum[valid] / count.double()).cpu().numpy(),
        inverse_negative_penalty=(count.double() / (last + 1).double()).cpu().numpy(),
        first_rank=first.cpu().numpy(),
    )


def _check_inputs(
    qf: torch.Tensor,
    gf: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
) -> None:
    """HavanaError for inconsistent shapes (non-finite features are caught where their norms are computed)."""
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise HavanaError(
            f"query features {tuple(qf.shape)} and gallery features {tuple(gf.shape)} must both be "
            "[N, D] with the same D; merge views first (merge_flip) and use one extractor for both."
        )
    if len(q_pids) != len(qf) or len(q_camids) != len(qf):
        raise HavanaError(
            f"{len(qf)} query features need as many pids and camids, got {len(q_pids)} and {len(q_camids)}."
        )
    if len(g_pids) != len(gf) or len(g_camids) != len(gf):
        raise HavanaError(
            f"{len(gf)} gallery features need as many pids and camids, got {len(g_pids)} and {len(g_camids)}."
        )


def evaluate(
    query_features: Any,
    gallery_features: Any,
    query_pids: Any,
    gallery_pids: Any,
    query_camids: Any,
    gallery_camids: Any,
    *,
    metric: str = "euclidean",
    max_rank: int = 50,
    rerank: RerankConfig | None = None,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
    progress: str | None = None,
) -> dict[str, Any]:
    """CMC, mAP and mINP of a query/gallery split under the Market-1501 protocol (module docstring).

    Inputs are numpy arrays or torch tensors (features [N, D], cast to float32); the work runs on `device` (default:
    where the query features are) in chunks of `chunk_size` queries; `progress`, if given, labels a
    progress line per chunk (havana.utils.progress) in the job's log. `rerank` applies k-reciprocal re-ranking first,
    on the gallery without its junk (pid -1), as torchreid and fast-reid do.
    Returns {"mAP", "mINP" (fractions), "cmc" (list, cmc[k-1] = Rank-k fraction, length max_rank), "num_valid_queries",
    "per_query"}: per_query holds, for each valid query in order, its "index" among the queries, its "ap" and its
    0-based "first_match" rank, from which every aggregate but mINP is recomputed (a paired bootstrap over queries,
    havana.report.bootstrap, resamples them).
    """
    check_metric(metric)
    if isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1:
        raise HavanaError(f"max_rank must be a positive integer, got {max_rank!r}.")
    qf = as_tensor(query_features, device=torch.device(device) if device is not None else None, dtype=torch.float32)
    gf = as_tensor(gallery_features, device=qf.device, dtype=torch.float32)
    q_pids, g_pids, q_camids, g_camids = (
        as_tensor(v, device=qf.device, dtype=torch.int64)
        for v in (query_pids, gallery_pids, query_camids, gallery_camids)
    )
    _check_inputs(qf, gf, q_pids, g_pids, q_camids, g_camids)

    kept = torch.nonzero(g_pids != JUNK_PID).squeeze(1)
    all_kept = len(kept) == len(gf)  # then no copy of the gallery is made
    gallery = _GalleryIndex.build(g_pids[kept], g_camids[kept])
    rows = min(chunk_size or chunk_rows(len(gf)), gallery.max_chunk_rows)
    ranked = gf if all_kept else gf[kept]
    if rerank is None:
        chunks = _plain_chunks(qf, ranked, metric, rows)
    else:  # junk leaves before the neighbour graph is built, as in torchreid and fast-reid
        chunks = rerank_distance_chunks(
            qf, ranked, rerank, metric=metric, chunk_size=rows, progress=progress is not None
        )
    results = []
    starts = []
    for start, block in shown_progress(chunks, progress, -(-len(qf) // rows), unit="chunk") if progress else chunks:
        stop = start + len(block)
        results.append(_score_chunk(block, q_pids[start:stop], q_camids[start:stop], gallery))
        starts.append(start)

    ap = np.concatenate([r.average_precision for r in results]) if results else np.zeros(0)
    if len(ap) == 0:
        raise HavanaError(
            "no query has a true match in the gallery (same pid, other camera), so nothing can be "
            "evaluated; check that query and gallery come from the same dataset's test split."
        )
    inp = np.concatenate([r.inverse_negative_penalty for r in results])
    first = np.concatenate([r.first_rank for r in results])
    hits = np.bincount(np.minimum(first, max_rank), minlength=max_rank + 1)[:max_rank]
    return {
        "mAP": float(np.mean(ap)),
        "mINP": float(np.mean(inp)),
        "cmc": (np.cumsum(hits) / len(ap)).tolist(),
        "num_valid_queries": int(len(ap)),
        "per_query": {
            "index": np.concatenate([r.query + start for r, start in zip(results, starts)]).tolist(),
            "ap": ap.tolist(),
            "first_match": first.tolist(),
        },
    }


def _plain_chunks(qf: torch.Tensor, gf: torch.Tensor, metric: str, rows: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, distance block) for consecutive query chunks against the whole gallery."""
    distance = DistanceFunction(gf, metric)
    for start in range(0, len(qf), rows):
        yield start, distance(qf[start : start + rows])


def merge_flip(features: Any) -> Any:
    """Flip-test features [N, 2, D] (plain, flipped) -> their mean [N, D], same type as the input; no L2 norm here.

    reid-strong-baseline L2-normalises before a Euclidean distance (TEST.FEAT_NORM yes); that ranking is what
    metric="cosine" gives, so the merge itself stays a plain mean.
    """
    if features.ndim != 3 or features.shape[1] != 2:
        raise HavanaError(f"flip-test features must be [N, 2, D] (plain, flipped), got shape {tuple(features.shape)}.")
    return features.mean(1) if isinstance(features, torch.Tensor) else np.asarray(features).mean(axis=1)


def topk_indices(
    query_features: Any,
    gallery_features: Any,
    k: int = 10,
    *,
    metric: str = "euclidean",
    q_pids: Any = None,
    g_pids: Any = None,
    q_camids: Any = None,
    g_camids: Any = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """The k nearest gallery indices per query [Q, min(k, G)] (int64) in the protocol's ranking order.

    With pids and camids given, the protocol's removals apply (junk, same pid and camera) as in evaluate(), and a
    query left with fewer than k gallery entries has its row padded with -1.
    """
    check_metric(metric)
    qf = as_tensor(query_features, dtype=torch.float32)
    gf = as_tensor(gallery_features, device=qf.device, dtype=torch.float32)
    filtered = q_pids is not None
    if filtered:
        q_pids, g_pids, q_camids, g_camids = (
            as_tensor(v, device=qf.device, dtype=torch.int64) for v in (q_pids, g_pids, q_camids, g_camids)
        )
        _check_inputs(qf, gf, q_pids, g_pids, q_camids, g_camids)
    top = min(k, len(gf))
    distance = DistanceFunction(gf, metric)
    result = np.full((len(qf), top), -1, dtype=np.int64)
    rows = chunk_size or chunk_rows(len(gf))
    excluded_key = torch.iinfo(torch.int64).max
    for start in range(0, len(qf), rows):
        stop = min(start + rows, len(qf))
        keys = ranking_keys(distance(qf[start:stop]))
        if filtered:
            removed = (g_pids[None, :] == JUNK_PID) | (
                (g_pids[None, :] == q_pids[start:stop, None]) & (g_camids[None, :] == q_camids[start:stop, None])
            )
            keys.masked_fill_(removed, excluded_key)
        nearest = torch.topk(keys, top, dim=1, largest=False, sorted=True)
        indices = nearest.indices.masked_fill(nearest.values == excluded_key, -1)
        result[start:stop] = indices.cpu().numpy()
    return result

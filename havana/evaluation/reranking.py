"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), sparse and chunked so MSMT17 scale fits in a few GB.

The published code holds several dense (Q+G) x (Q+G) matrices (about 35 GB each in float32 at MSMT17 scale). Here only
the k1+1 nearest neighbours of every probe/gallery item are kept (one chunked pass over the distances); the
k-reciprocal sets, their expansion and the encoding vectors V are sparse matrices (about 30 non-zeros per row); and
the Jaccard distance is computed for one chunk of queries at a time from an inverted index of V. The result equals
the published algorithm's, except that V is kept in float64 where the original rounds it to float16.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from havana.errors import HavanaError
from havana.evaluation.distance import DistanceFunction, chunk_rows, paired_distance, ranking_keys, row_groups
from havana.utils.progress import progress as shown_progress

PAIRS_PER_CHUNK = 1 << 14  # feature pairs gathered at once when weighting the expanded neighbour sets
TERMS_PER_STEP = 1 << 22  # (query, item, gallery) terms of the Jaccard join held at once


@dataclass(frozen=True)
class RerankConfig:
    """k-reciprocal re-ranking settings; the defaults are the paper's (and reid-strong-baseline's)."""

    k1: int = 20  # size of the k-reciprocal neighbourhood R(p, k1)
    k2: int = 6  # neighbours averaged by local query expansion (1 = none)
    lambda_value: float = 0.3  # weight of the original distance; the Jaccard distance gets 1 - lambda_value

    def __post_init__(self) -> None:
        if self.k1 < 1 or not 1 <= self.k2 <= self.k1 + 1:
            raise HavanaError(f"re-ranking needs k1 >= 1 and 1 <= k2 <= k1 + 1, got k1={self.k1}, k2={self.k2}.")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise HavanaError(f"re-ranking lambda_value must lie in [0, 1], got {self.lambda_value}.")


def _nearest(features: torch.Tensor, metric: str, k: int, rows: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest items of every item [N, k] (stable order, itself included) and each row's largest distance."""
    distance = DistanceFunction(features, metric)
    nearest = np.empty((len(features), k), dtype=np.int64)
    row_max = np.empty(len(features), dtype=np.float64)
    starts = range(0, len(features), rows)
    for start in shown_progress(starts, "re-rank neighbours", unit="chunk") if progress else starts:
        block = distance(features[start : start + rows])
        row_max[start : start + len(block)] = block.amax(dim=1).double().cpu().numpy()
        keys = ranking_keys(block)
        nearest[start : start + len(block)] = torch.topk(keys, k, dim=1, largest=False).indices.cpu().numpy()
    return nearest, row_max


def _neighbour_matrix(nearest: np.ndarray, k: int) -> sp.csr_matrix:
    """A[i, j] = 1 when j is among the k nearest items of i."""
    n = len(nearest)
    return sp.csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), nearest[:, :k].ravel())), shape=(n, n))


def _reciprocal(nearest: np.ndarray, k: int) -> sp.csr_matrix:
    """R[i, j] = 1 when j is among i's k nearest and i among j's: the k-reciprocal sets (k counts the item itself)."""
    neighbours = _neighbour_matrix(nearest, k)
    return neighbours.multiply(neighbours.T).tocsr()


def _expanded_sets(nearest: np.ndarray, k1: int) -> sp.csr_matrix:
    """R*(i): R(i, k1) united with every R(c, k1/2), c in R(i, k1), that shares more than 2/3 of its items with R(i,
    k1)."""
    reciprocal = _reciprocal(nearest, k1 + 1)
    half = _reciprocal(nearest, int(np.around(k1 / 2)) + 1)
    half_size = np.diff(half.indptr)
    overlap = (reciprocal @ half.T).multiply(reciprocal).tocoo()  # |R(i) ∩ R_half(c)| for c in R(i)
    chosen = overlap.data > 2.0 / 3.0 * half_size[overlap.col]
    n = len(nearest)
    selected = sp.csr_matrix((np.ones(int(chosen.sum())), (overlap.row[chosen], overlap.col[chosen])), shape=(n, n))
    expanded = (reciprocal + selected @ half).tocsr()
    expanded.sort_indices()
    return expanded


def _encodings(
    features: torch.Tensor, metric: str, nearest: np.ndarray, row_max: np.ndarray, config: RerankConfig
) -> sp.csr_matrix:
    """The sparse vectors V (Eq. 7, Gaussian-kernel weights on R*), averaged over the k2 nearest items (Eq. 11)."""
    expanded = _expanded_sets(nearest, config.k1)
    rows = np.repeat(np.arange(len(nearest)), np.diff(expanded.indptr))
    columns = expanded.indices
    dist = np.empty(len(columns), dtype=np.float64)
    for start in range(0, len(columns), PAIRS_PER_CHUNK):
        left = torch.as_tensor(rows[start : start + PAIRS_PER_CHUNK], device=features.device)
        right = torch.as_tensor(columns[start : start + PAIRS_PER_CHUNK], device=features.device)
        dist[start : start + len(left)] = (
            paired_distance(features[left], features[right], metric).double().cpu().numpy()
        )
    weight = np.exp(-dist / np.maximum(row_max[rows], np.finfo(np.float64).tiny))
    row_sum = np.bincount(rows, weights=weight, minlength=len(nearest))
    encodings = sp.csr_matrix((weight / row_sum[rows], columns.copy(), expanded.indptr.copy()), shape=expanded.shape)
    if config.k2 == 1:
        return encodings
    n = len(nearest)
    averaging = sp.csr_matrix(
        (
            np.full(n * config.k2, 1.0 / config.k2),
            (np.repeat(np.arange(n), config.k2), nearest[:, : config.k2].ravel()),
        ),
        shape=(n, n),
    )
    return (averaging @ encodings).tocsr()


def _shared_mass(query_rows: sp.csr_matrix, gallery_by_item: sp.csr_matrix, gallery_size: int) -> np.ndarray:
    """sum_k min(V_q[k], V_g[k]) for every (query row, gallery item), joining on the items both vectors touch."""
    count = query_rows.shape[0]
    row = np.repeat(np.arange(count), np.diff(query_rows.indptr))
    item, value = query_rows.indices, query_rows.data
    lengths = gallery_by_item.indptr[item + 1] - gallery_by_item.indptr[item]
    first = np.cumsum(lengths) - lengths
    position = np.repeat(gallery_by_item.indptr[item] - first, lengths) + np.arange(int(lengths.sum()))
    shared = np.minimum(np.repeat(value, lengths), gallery_by_item.data[position])
    flat = np.repeat(row, lengths) * gallery_size + gallery_by_item.indices[position]
    return np.bincount(flat, weights=shared, minlength=count * gallery_size).reshape(count, gallery_size)


def _jaccard_block(query_rows: sp.csr_matrix, gallery_by_item: sp.csr_matrix, gallery_size: int) -> np.ndarray:
    """Jaccard distance 1 - sum(min)/sum(max) [b, G] float32 between query encodings and every gallery encoding.

    With rows summing to 1, sum(max) = 2 - sum(min). Rows are joined in groups of about TERMS_PER_STEP terms.
    """
    lengths = np.diff(gallery_by_item.indptr)[query_rows.indices]
    per_row = np.bincount(
        np.repeat(np.arange(query_rows.shape[0]), np.diff(query_rows.indptr)),
        weights=lengths,
        minlength=query_rows.shape[0],
    )
    result = np.empty((query_rows.shape[0], gallery_size), dtype=np.float32)
    for first_row, last_row in row_groups(per_row.astype(np.int64).tolist(), TERMS_PER_STEP):
        shared = _shared_mass(query_rows[first_row:last_row], gallery_by_item, gallery_size)
        np.divide(shared, 2.0 - shared, out=shared)
        np.subtract(1.0, shared, out=result[first_row:last_row], casting="same_kind")
    return result


def rerank_distance_chunks(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    config: RerankConfig,
    *,
    metric: str = "euclidean",
    chunk_size: int | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, [b, G] re-ranked distance block) for consecutive query chunks; float32 on the features' device."""
    features = torch.cat([query_features, gallery_features])
    num_query, num_gallery = len(query_features), len(gallery_features)
    if len(features) < config.k1 + 1:
        raise HavanaError(
            f"re-ranking with k1={config.k1} needs more than {config.k1} query+gallery items, got "
            f"{len(features)}; lower k1 or evaluate without re-ranking."
        )
    nearest, row_max = _nearest(features, metric, config.k1 + 1, chunk_rows(len(features)), progress)
    encodings = _encodings(features, metric, nearest, row_max, config)
    del features
    gallery_by_item = encodings[num_query:].T.tocsr()
    query_scale = torch.as_tensor(
        np.maximum(row_max[:num_query], np.finfo(np.float32).tiny), dtype=torch.float32, device=query_features.device
    )
    distance = DistanceFunction(gallery_features, metric)
    rows = chunk_size or chunk_rows(num_gallery)
    for start in range(0, num_query, rows):
        stop = min(start + rows, num_query)
        jaccard = torch.from_numpy(_jaccard_block(encodings[start:stop], gallery_by_item, num_gallery))
        original = distance(query_features[start:stop]).div_(query_scale[start:stop, None])
        final = original.mul_(config.lambda_value).add_(jaccard.to(original.device), alpha=1.0 - config.lambda_value)
        yield start, final.clamp_min_(0.0)


def k_reciprocal_distance(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    config: RerankConfig = RerankConfig(),
    *,
    metric: str = "euclidean",
) -> torch.Tensor:
    """The whole re-ranked [Q, G] distance matrix (small problems; evaluate() consumes the chunks instead)."""
    blocks = [block for _, block in rerank_distance_chunks(query_features, gallery_features, config, metric=metric)]
    return torch.cat(blocks)

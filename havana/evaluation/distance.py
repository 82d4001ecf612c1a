"""Query-gallery distances for retrieval, computed in row chunks so that no full Q x G matrix is ever held.

Shared by evaluation (ranking) and re-ranking. Distances are float32 and clamped at 0: "euclidean" is the SQUARED
Euclidean distance |q|^2 + |g|^2 - 2 q.g (the ranking is the same as for the plain distance, and this is what
torchreid, reid-strong-baseline and k-reciprocal re-ranking compute), "cosine" is 1 - cos(q, g).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from havana.errors import HavanaError

METRICS = ("euclidean", "cosine")
CHUNK_ELEMENTS = 1 << 25  # distance entries per chunk (128 MiB of float32): bounds memory at any problem size


def as_tensor(values: Any, *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A numpy array, sequence or tensor as a torch tensor on `device` (default: where it already is, else CPU)."""
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    return tensor.to(device=device if device is not None else tensor.device, dtype=dtype or tensor.dtype)


def check_metric(metric: str) -> str:
    """`metric` if it is a known distance, else HavanaError listing the known ones."""
    if metric not in METRICS:
        raise HavanaError(f"unknown distance metric '{metric}'; use one of {', '.join(METRICS)}.")
    return metric


def chunk_rows(columns: int, elements: int = CHUNK_ELEMENTS) -> int:
    """How many query rows fit a chunk of `elements` distance entries against `columns` gallery entries."""
    return max(1, elements // max(1, columns))


def squared_norms(features: torch.Tensor, rows: int = 1 << 14) -> torch.Tensor:
    """|x|^2 of every row, a block of rows at a time (no temporary as large as the features)."""
    return (
        torch.cat([(block * block).sum(dim=1) for block in features.split(rows)])
        if len(features)
        else features.new_zeros(0)
    )


class DistanceFunction:
    """Distances from any query rows to one fixed gallery; the gallery's norms are computed once."""

    def __init__(self, gallery: torch.Tensor, metric: str = "euclidean"):
        self.metric = check_metric(metric)
        self.gallery_sq = _finite(squared_norms(gallery))
        if metric == "cosine":
            self.gallery = F.normalize(gallery, dim=1)  # one normalised copy of the gallery
        else:
            self.gallery = gallery

    def __call__(self, queries: torch.Tensor) -> torch.Tensor:
        """The [len(queries), G] float32 distance block, clamped at 0."""
        queries_sq = _finite((queries * queries).sum(dim=1, keepdim=True))
        if self.metric == "cosine":
            queries = F.normalize(queries, dim=1)
            dist = torch.addmm(
                torch.ones((), dtype=queries.dtype, device=queries.device), queries, self.gallery.T, alpha=-1.0
            )
        else:
            dist = torch.addmm(self.gallery_sq[None, :], queries, self.gallery.T, alpha=-2.0)
            dist.add_(queries_sq)
        return dist.clamp_min_(0.0)


def _finite(norms: torch.Tensor) -> torch.Tensor:
    """`norms` unchanged, or HavanaError when a feature vector holds NaN, inf or values too large to square."""
    if not bool(torch.isfinite(norms).all()):
        raise HavanaError(
            "the features contain NaN, infinite or overflowing values (a diverged model?); retrain or re-extract them."
        )
    return norms


def pairwise_distance(
    query_features: Any, gallery_features: Any, metric: str = "euclidean", *, chunk_size: int | None = None
) -> torch.Tensor:
    """The full [Q, G] float32 distance matrix, built chunk by chunk (for small problems and for tests)."""
    queries = as_tensor(query_features, dtype=torch.float32)
    gallery = as_tensor(gallery_features, device=queries.device, dtype=torch.float32)
    distance = DistanceFunction(gallery, metric)
    rows = chunk_size or chunk_rows(len(gallery))
    blocks = [distance(queries[start : start + rows]) for start in range(0, len(queries), rows)]
    return torch.cat(blocks) if blocks else queries.new_zeros((0, len(gallery)))


def sortable_bits(distances: torch.Tensor) -> torch.Tensor:
    """Non-negative float32 distances as int64 integers (< 2**31) with the same order; -0.0 becomes +0.0."""
    return distances.contiguous().view(torch.int32).to(torch.int64).clamp_min_(0)


def ranking_keys(distances: torch.Tensor) -> torch.Tensor:
    """Unique int64 keys of a [b, G] distance block ordered by (distance, column), the stable-argsort order."""
    column_bits = max(1, (distances.shape[1] - 1).bit_length())
    keys = sortable_bits(distances)
    keys <<= column_bits
    return keys.bitwise_or_(torch.arange(distances.shape[1], device=distances.device))


def row_groups(per_row: list[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive row ranges holding about `budget` items each (one range when everything fits)."""
    groups, first, held = [], 0, 0
    for row, count in enumerate(per_row):
        if held and held + count > budget:
            groups.append((first, row))
            first, held = row, 0
        held += count
    groups.append((first, len(per_row)))
    return groups


def paired_distance(left: torch.Tensor, right: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Distance between row i of `left` and row i of `right` (same definition as DistanceFunction)."""
    if check_metric(metric) == "cosine":
        return (1.0 - (F.normalize(left, dim=1) * F.normalize(right, dim=1)).sum(dim=1)).clamp_min_(0.0)
    return ((left * left).sum(dim=1) + (right * right).sum(dim=1) - 2.0 * (left * right).sum(dim=1)).clamp_min_(0.0)

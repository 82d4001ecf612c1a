"""P×K identity sampler (BoT's RandomIdentitySampler): batches of P distinct ids × K images, seeded per epoch.

An epoch walks every identity's images in chunks of K (ids with fewer than K images are drawn with replacement),
so one epoch sees about every image once; leftover ids that cannot fill P slots are padded into a final batch,
so no identity is starved. The plan depends only on (seed, epoch).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from havana.errors import HavanaError


class PKSampler(torch.utils.data.Sampler[list[int]]):
    """Yield lists of P*K dataset indices: P distinct identities, K indices each; use as `batch_sampler=`."""

    def __init__(self, pids: Sequence[int], p: int = 16, k: int = 4, seed: int = 0) -> None:
        if p < 1 or k < 1:
            raise HavanaError(f"P×K sampler needs p >= 1 and k >= 1, got p={p}, k={k}; fix the config.")
        grouped: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            grouped[int(pid)].append(index)
        self.indices_by_pid: dict[int, np.ndarray] = {
            pid: np.asarray(ix, dtype=np.int64) for pid, ix in sorted(grouped.items())
        }
        if len(self.indices_by_pid) < p:
            raise HavanaError(
                f"P×K sampler needs at least p={p} identities but the data has "
                f"{len(self.indices_by_pid)}; lower p in the config."
            )
        self.p, self.k, self.seed = p, k, seed
        self.epoch = 0
        self._plan: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def _chunks(self, rng: np.random.Generator) -> dict[int, list[list[int]]]:
        """Each identity's images shuffled and cut into chunks of K (a K-draw with replacement when it has fewer)."""
        chunks: dict[int, list[list[int]]] = {}
        for pid, indices in self.indices_by_pid.items():
            if len(indices) < self.k:
                chunks[pid] = [rng.choice(indices, size=self.k, replace=True).tolist()]
            else:
                order = rng.permutation(indices)
                chunks[pid] = [order[i : i + self.k].tolist() for i in range(0, len(order) - self.k + 1, self.k)]
        return chunks

    def _build_plan(self) -> list[list[int]]:
        """The batches of the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = self._chunks(rng)
        available = list(chunks)
        batches: list[list[int]] = []
        while len(available) >= self.p:
            chosen = rng.choice(len(available), size=self.p, replace=False)
            batch: list[int] = []
            for position in chosen:
                batch.extend(chunks[available[position]].pop())
            batches.append(batch)
            available = [pid for pid in available if chunks[pid]]
        if available:  # fewer than P ids left: pad with fresh K-draws of other ids so none is starved
            others = [pid for pid in self.indices_by_pid if pid not in set(available)]
            fill = rng.choice(len(others), size=self.p - len(available), replace=False)
            batch = [i for pid in available for i in chunks[pid].pop()]
            for position in fill:
                indices = self.indices_by_pid[others[position]]
                batch.extend(rng.choice(indices, size=self.k, replace=len(indices) < self.k).tolist())
            batches.append(batch)
        return batches

    def _batches(self) -> list[list[int]]:
        if self._plan is None or self._plan[0] != self.epoch:
            self._plan = (self.epoch, self._build_plan())
        return self._plan[1]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())

"""Plain reference implementations used as oracles by the evaluation tests (slow, obvious, loop per query)."""

from __future__ import annotations

import numpy as np


def reference_evaluate(dist: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50) -> dict:
    """The textbook protocol, one query at a time: stable full sort, drop junk, read matches off the ranked list."""
    q_pids, g_pids, q_camids, g_camids = map(np.asarray, (q_pids, g_pids, q_camids, g_camids))
    aps, inps, first, valid = [], [], [], []
    for i in range(len(dist)):
        order = np.argsort(dist[i], kind="stable")  # ties: lower gallery index first
        junk = (g_pids[order] == -1) | ((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        hits = np.flatnonzero(g_pids[order][~junk] == q_pids[i])
        if len(hits) == 0:
            continue
        aps.append(np.mean(np.arange(1, len(hits) + 1) / (hits + 1)))
        inps.append(len(hits) / (hits[-1] + 1))
        first.append(int(hits[0]))
        valid.append(i)
    cmc = [float(np.mean(np.asarray(first) < k)) for k in range(1, max_rank + 1)]
    return {
        "mAP": float(np.mean(aps)),
        "mINP": float(np.mean(inps)),
        "cmc": cmc,
        "num_valid_queries": len(aps),
        "per_query": {"index": valid, "ap": [float(ap) for ap in aps], "first_match": first},
    }

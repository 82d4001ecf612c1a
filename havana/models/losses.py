"""Loss terms of the baseline and of HAVANA as pure tensor functions (paper Eq. 7-9, 13-14).

Divergences are in nats unless a name says bits. Gaussians are diagonal and given by a mean and a log-variance; a
log-variance of None means the identity covariance (the covariance constraint of paper Sect. 3.5).

JS triplet reading (Eq. 8-9; DESIGN.md "Reading of the paper"). The paper's D_JS is "bounded in [0, 1]" and its
margins 0.3-0.7 matter (Table 4). The JS of the joint 2048-d Gaussians cannot do that: at the scale of BoT's BNNeck
features (per-dimension spread 0.5-1, identities tens apart) it is log 2 for every pair and its gradient is 0. The
default reading, "mean_dim", is the mean over dimensions of the per-dimension JS in bits: in [0, 1], it equals the
joint JS in bits in 1-D, and it keeps a gradient at any width (tests/test_losses.py measures it against the Euclidean
batch-hard triplet at 2048-d). "joint" stays available as a named option (config `js_divergence`). Hardest pairs
are mined by a stand-in built from three matmuls, the second-order (Fisher-metric) expansion of the mean-dim JS
(js_table.pairwise_js_mining_scores); the loss is the JS of the mined pairs.

Jensen-Shannon divergence of two Gaussians p, q (Eq. 8) has no closed form.
* Per-dimension 1-D JS (the default reading) and identity covariances: read from spline tables
  (havana/models/js_table.py). A 1-D JS depends only on delta = |mu_p - mu_q| / sqrt(var_p + var_q) and
  rho = |logvar_p - logvar_q| / 2; JS(delta, rho) is integrated once per process in float64 (about 0.4 s at first use,
  nothing stored on disk) and read as a bicubic spline, whose exact derivative is the gradient. Error against scipy
  quadrature <= 1e-7 nats over the whole domain in float64 (float32 inputs with log-variances in the head's bound
  (-10, 10), havana/models/head.py: <= 3e-7); gradients within 3e-6 (d/dlogvar, and d/dmu times sqrt(var_p + var_q)).
  At the paper's width (64 x 2048, learned sigma) the JS triplet's forward + backward costs about 8x the Euclidean
  batch-hard triplet's on one CPU thread (the 32-node Gauss-Hermite estimator it replaced: 250-340x, with errors up to
  7e-2 nats).
* General diagonal covariances, joint. With u = log q - log p,
    JS(p, q) = log 2 - 1/2 integral (p + q) g(u) dx = log 2 - 1/2 E_p[g(u)] - 1/2 E_q[g(u)],
    g(u) = sigmoid(-u) softplus(u) + sigmoid(u) softplus(-u)   (even, smooth, in (0, log 2], decays like |u| e^-|u|),
  which splits the integrand between the two frames by the posterior weights p / (p + q) and q / (p + q) (the older
  form log 2 - 1/2 E_p[softplus(u)] - 1/2 E_q[softplus(-u)] leaves the whole narrow bump of the other Gaussian to the
  wide frame's nodes: 45% error at a variance ratio of e^6 with 16 nodes). At x = mu_p + std_p * eps,
  u = -KL(p || q) + sum_k a_k (eps_k^2 - 1) + b_k eps_k. The two terms with the largest |a_k| (the non-Gaussian part)
  are integrated by tensor-product Gauss-Hermite (GENERAL_NODES per axis); the sum of the remaining terms is replaced
  by a normal with its exact variance and a first-order Edgeworth correction for its exact skewness. In 1-D and 2-D
  this is exact up to quadrature error, measured against scipy quadrature over |mu_p - mu_q| up to 8
  (tests/test_losses.py): absolute error <= 4e-4 nats for |logvar_p - logvar_q| <= 1, <= 3e-3 for <= 2, <= 1.5e-2
  for <= 3, <= 7e-2 up to 6 (the wide Gaussian's frame cannot resolve the narrow one's bump); it approaches the exact
  value as the dimension grows (central limit) and is tested against Monte Carlo in 8-D.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from havana.errors import HavanaError
from havana.models.js_table import gaussian_js_per_dim, js_isotropic_from_sq_distance, pairwise_js_mining_scores

LOG2 = math.log(2.0)
JS_DIVERGENCES = ("mean_dim", "joint")  # readings of D_JS in the JS triplet (Eq. 9); the first is the default
GENERAL_NODES = 32  # Gauss-Hermite nodes per quadrature axis of the joint general-covariance estimator
PAIRWISE_CHUNK = 1 << 25  # per-dimension or quadrature values held at once by pairwise_js_bits


def cross_entropy_label_smoothing(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy against (1 - epsilon) * one-hot + epsilon / num_classes (BoT's label smoothing), batch mean."""
    log_probs = F.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    return ((1.0 - epsilon) * nll - epsilon * log_probs.mean(dim=1)).mean()


def pairwise_euclidean(embeddings: torch.Tensor) -> torch.Tensor:
    """B x B Euclidean distances, computed with one matmul (sqrt clamped away from 0 so the gradient stays finite)."""
    squared = embeddings.pow(2).sum(dim=1)
    d2 = squared.unsqueeze(1) + squared.unsqueeze(0) - 2.0 * embeddings @ embeddings.t()
    return d2.clamp_min(1e-12).sqrt()


def hard_mining(distances: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor: the largest distance to a same-id sample and the smallest to a different-id sample (batch-hard)."""
    same = pids.unsqueeze(0) == pids.unsqueeze(1)
    hardest_positive = distances.masked_fill(~same, float("-inf")).amax(dim=1)
    hardest_negative = distances.masked_fill(same, float("inf")).amin(dim=1)
    return hardest_positive, hardest_negative


def _margin_loss(
    positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = F.relu(positive - negative + margin).mean()
    info = {
        "dist_ap": positive.mean().detach(),
        "dist_an": negative.mean().detach(),
        "active": (positive - negative + margin > 0).float().mean(),
    }
    return loss, info


def batch_hard_triplet_loss(
    embeddings: torch.Tensor, pids: torch.Tensor, margin: float = 0.3
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 7 with batch-hard mining on Euclidean distances: mean over anchors of max(d_ap - d_an + margin, 0)."""
    return _margin_loss(*hard_mining(pairwise_euclidean(embeddings), pids), margin)


def gaussian_kl(
    mu1: torch.Tensor, logvar1: torch.Tensor | None, mu2: torch.Tensor, logvar2: torch.Tensor | None
) -> torch.Tensor:
    """KL(N(mu1, exp(logvar1)) || N(mu2, exp(logvar2))) of diagonal Gaussians, summed over the last dimension."""
    logvar1 = torch.zeros_like(mu1) if logvar1 is None else logvar1
    logvar2 = torch.zeros_like(mu2) if logvar2 is None else logvar2
    return 0.5 * (logvar2 - logvar1 + (logvar1.exp() + (mu1 - mu2).pow(2)) * torch.exp(-logvar2) - 1.0).sum(dim=-1)


@functools.lru_cache(maxsize=8)
def _hermite(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite rule: E[f(t)], t ~ N(0, 1), is sum(w * f(nodes))."""
    nodes, weights = np.polynomial.hermite.hermgauss(num_nodes)
    return nodes * math.sqrt(2.0), weights / math.sqrt(math.pi)


def _rule(num_nodes: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.as_tensor(a, dtype=like.dtype, device=like.device) for a in _hermite(num_nodes))


def _js_kernel(u: torch.Tensor) -> torch.Tensor:
    """g(u) = sigmoid(-u) softplus(u) + sigmoid(u) softplus(-u): even, smooth, in (0, log 2], decays like |u| e^-|u|."""
    return torch.sigmoid(-u) * F.softplus(u) + torch.sigmoid(u) * F.softplus(-u)


def _log_ratio_coefficients(mu_p, logvar_p, mu_q, logvar_q) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per dimension (c, a, b) with log q(x) - log p(x) = sum_k c_k + a_k (eps_k^2 - 1) + b_k eps_k at
    x = mu_p + std_p * eps: c = -KL(p_k || q_k), a = (1 - var_p / var_q) / 2, b = -std_p (mu_p - mu_q) / var_q."""
    ratio = torch.exp(logvar_p - logvar_q)
    quadratic = 0.5 * (1.0 - ratio)
    linear = -torch.exp(0.5 * logvar_p - logvar_q) * (mu_p - mu_q)
    offset = -0.5 * (ratio - 1.0 - (logvar_p - logvar_q) + (mu_p - mu_q).pow(2) * torch.exp(-logvar_q))
    return offset, quadratic, linear


def _expected_kernel_quadratic(offset, quadratic, linear, exact_dims: int, num_nodes: int) -> torch.Tensor:
    """E[g(offset + sum_k quadratic_k (eps_k^2 - 1) + linear_k eps_k)], eps ~ N(0, I) over the last dimension.

    The `exact_dims` terms with the largest |quadratic_k| (the non-Gaussian part) are integrated by tensor-product
    Gauss-Hermite; the sum of the other terms is replaced by the normal with its exact mean 0 and variance
    sum(2 quadratic^2 + linear^2) and a first-order Edgeworth correction for its exact skewness. Exact up to
    quadrature error when dim <= exact_dims or when the remaining quadratic coefficients are 0 (equal covariances).
    """
    nodes, weights = _rule(num_nodes, offset)
    exact_dims = min(exact_dims, quadratic.shape[-1])
    top = quadratic.abs().topk(exact_dims, dim=-1).indices
    quad_top, lin_top = quadratic.gather(-1, top), linear.gather(-1, top)
    variance = 2.0 * quadratic.pow(2) + linear.pow(2)
    third = 8.0 * quadratic.pow(3) + 6.0 * quadratic * linear.pow(2)  # third cumulant of each term
    rest = torch.ones_like(quadratic).scatter(-1, top, 0.0)  # masks, not subtraction: no cancellation
    rest_var = (variance * rest).sum(-1).clamp_min(1e-12)
    rest_skew = ((third * rest).sum(-1) / rest_var.pow(1.5)).clamp(-1.0, 1.0)  # Edgeworth is for mild skew
    values = offset.unsqueeze(-1) + rest_var.sqrt().unsqueeze(-1) * nodes  # [..., n]: the remainder
    # First-order Edgeworth correction of the remainder's normal density for its skewness: phi(t) (1 + skew He3(t) / 6).
    grid_weights = weights * (1.0 + rest_skew.unsqueeze(-1) * (nodes.pow(3) - 3.0 * nodes) / 6.0)
    for m in range(exact_dims):  # at most two terms: a Python loop over quadrature axes, not over samples
        term = quad_top[..., m, None] * (nodes.pow(2) - 1.0) + lin_top[..., m, None] * nodes  # [..., n]
        values = values.unsqueeze(-1) + term.view(*term.shape[:-1], *([1] * (m + 1)), -1)
        grid_weights = grid_weights.unsqueeze(-1) * weights.view(*([1] * (m + 1)), -1)
    return (_js_kernel(values) * grid_weights).flatten(-exact_dims - 1).sum(-1)


def _fill_logvars(mu1, logvar1, mu2, logvar2):
    logvar1 = torch.zeros_like(mu1) if logvar1 is None else logvar1
    logvar2 = torch.zeros_like(mu2) if logvar2 is None else logvar2
    return torch.broadcast_tensors(mu1, logvar1, mu2, logvar2)


def gaussian_js(
    mu1: torch.Tensor,
    logvar1: torch.Tensor | None,
    mu2: torch.Tensor,
    logvar2: torch.Tensor | None,
    *,
    exact_dims: int = 2,
    general_nodes: int = GENERAL_NODES,
) -> torch.Tensor:
    """Joint Jensen-Shannon divergence (nats, in [0, log 2]) of two diagonal Gaussians over the last dimension.

    Both log-variances None: identity covariances, from the squared-distance spline table (error <= 2e-8 nats).
    Otherwise (None read as zeros): the estimator of the module docstring, with `exact_dims` dimensions integrated
    by quadrature and `general_nodes` Gauss-Hermite nodes per quadrature axis.
    """
    if logvar1 is None and logvar2 is None:
        return js_isotropic_from_sq_distance((mu1 - mu2).pow(2).sum(dim=-1))
    mu1, logvar1, mu2, logvar2 = _fill_logvars(mu1, logvar1, mu2, logvar2)
    expected = 0.0
    for offset, quadratic, linear in (
        _log_ratio_coefficients(mu1, logvar1, mu2, logvar2),
        _log_ratio_coefficients(mu2, logvar2, mu1, logvar1),
    ):
        expected = expected + _expected_kernel_quadratic(offset.sum(-1), quadratic, linear, exact_dims, general_nodes)
    return (LOG2 - 0.5 * expected).clamp(0.0, LOG2)


def js_bits(
    mu1: torch.Tensor,
    logvar1: torch.Tensor | None,
    mu2: torch.Tensor,
    logvar2: torch.Tensor | None,
    divergence: str = "mean_dim",
) -> torch.Tensor:
    """The JS triplet's divergence in bits, in [0, 1], over the last dimension (broadcasts).

    "mean_dim" (default): the mean over dimensions of the per-dimension JS; "joint": the JS of the joint diagonal
    Gaussians. Why the default: module docstring and DESIGN.md.
    """
    if divergence == "mean_dim":
        return gaussian_js_per_dim(mu1, logvar1, mu2, logvar2).mean(dim=-1) / LOG2
    if divergence == "joint":
        return gaussian_js(mu1, logvar1, mu2, logvar2) / LOG2
    raise HavanaError(f"unknown JS divergence '{divergence}'; choose one of {', '.join(JS_DIVERGENCES)}.")


def pairwise_js_bits(
    mu: torch.Tensor,
    logvar: torch.Tensor | None = None,
    divergence: str = "mean_dim",
    chunk_elements: int = PAIRWISE_CHUNK,
) -> torch.Tensor:
    """B x B matrix of js_bits between the rows of a batch, computed in blocks of anchors to bound memory
    (about `chunk_elements` per-dimension or quadrature values at a time); the joint isotropic case uses one matmul."""
    if divergence == "joint" and logvar is None:
        squared = mu.pow(2).sum(dim=1)
        d2 = (squared.unsqueeze(1) + squared.unsqueeze(0) - 2.0 * mu @ mu.t()).clamp_min(0.0)
        return js_isotropic_from_sq_distance(d2) / LOG2
    per_anchor = mu.shape[0] * (mu.shape[1] if divergence == "mean_dim" else GENERAL_NODES**2)
    step = max(1, chunk_elements // max(per_anchor, 1))
    blocks = []
    for start in range(0, mu.shape[0], step):
        rows = slice(start, start + step)
        blocks.append(
            js_bits(
                mu[rows].unsqueeze(1),
                None if logvar is None else logvar[rows].unsqueeze(1),
                mu.unsqueeze(0),
                None if logvar is None else logvar.unsqueeze(0),
                divergence,
            )
        )
    return torch.cat(blocks)


def pairwise_gaussian_js(mu: torch.Tensor, logvar: torch.Tensor | None = None) -> torch.Tensor:
    """B x B matrix of the joint gaussian_js (nats) between the rows of a batch."""
    return pairwise_js_bits(mu, logvar, "joint") * LOG2


def hard_mining_indices(distances: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor: the index of its farthest same-id sample and of its nearest different-id sample (batch-hard)."""
    same = pids.unsqueeze(0) == pids.unsqueeze(1)
    return (
        distances.masked_fill(~same, float("-inf")).argmax(dim=1),
        distances.masked_fill(same, float("inf")).argmin(dim=1),
    )


def js_triplet_loss(
    mu: torch.Tensor, logvar: torch.Tensor | None, pids: torch.Tensor, margin: float = 0.5, divergence: str = "mean_dim"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 9 with batch-hard mining: max(D(a, p) - D(a, n) + margin, 0) with D = js_bits in [0, 1] (the margin is on
    that scale), p the anchor's hardest positive and n its hardest negative.

    Mining ranks all pairs without a graph: by the joint JS itself for "joint", for "mean_dim" by
    pairwise_js_mining_scores, its second-order expansion as three B x D x B matmuls (the table JS of all B x B pairs
    would cost B x B x D spline reads). At the paper's width it mines the exact mean-dim JS's hardest positive and
    negative for 0.95 / 0.93 of anchors with identity covariances, 0.91 / 0.88 with log-variances ~ N(0, 0.5^2),
    0.82 / 0.73 with N(0, 1.5^2); where it differs, the mined pair's JS is within 1e-3, 1e-3, 6e-3 bits of the
    hardest (havana/models/js_table.py tests). The loss then computes the JS, with its gradient, of each anchor's two
    mined pairs only.
    """
    with torch.no_grad():
        detached = None if logvar is None else logvar.detach()
        ranking = (
            pairwise_js_mining_scores(mu.detach(), detached)
            if divergence == "mean_dim"
            else pairwise_js_bits(mu.detach(), detached, divergence)
        )
        positive_index, negative_index = hard_mining_indices(ranking, pids)
    pick = lambda index: None if logvar is None else logvar[index]  # noqa: E731
    positive = js_bits(mu, logvar, mu[positive_index], pick(positive_index), divergence)
    negative = js_bits(mu, logvar, mu[negative_index], pick(negative_index), divergence)
    return _margin_loss(positive, negative, margin)

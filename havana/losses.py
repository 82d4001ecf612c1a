"""Loss terms of the baseline and of HAVANA as pure tensor functions (paper Eq. 7-9, 13-14).

Divergences are in nats. Gaussians are diagonal and given by a mean and a log-variance; a log-variance of None
means the identity covariance (the covariance constraint of paper Sect. 3.5).

Jensen-Shannon divergence of two Gaussians p, q (Eq. 8) has no closed form. With r = log q - log p,
    JS(p, q) = log 2 - 1/2 E_p[softplus(r)] - 1/2 E_q[softplus(-r)].
* Identity covariances: r is Gaussian under p, N(-d^2/2, d^2) with d = |mu_p - mu_q|, and both expectations are the
  same 1-D integral in d, computed by Gauss-Hermite quadrature (error < 1e-6 with the default 64 nodes).
* General diagonal covariances: at x = mu_p + std_p * eps, r = -KL(p || q) + sum_k a_k (eps_k^2 - 1) + b_k eps_k.
  The two terms with the largest |a_k| (the non-Gaussian part) are integrated by tensor-product Gauss-Hermite
  (16 nodes per axis); the sum of the remaining terms is replaced by a normal with its exact variance and a
  first-order Edgeworth correction for its exact skewness. Exact up to quadrature error in 1-D and 2-D and for equal
  covariances; approaches the exact value as the dimension grows (central limit). Measured against numerical
  integration: worst relative error 1.4% in 1-D and 2-D with variance ratios up to e^6 (tests/test_losses.py), and
  against 2e6-sample Monte Carlo 0.2-1.2% in 3-D to 64-D.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

LOG2 = math.log(2.0)


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


def _margin_loss(positive: torch.Tensor, negative: torch.Tensor, margin: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = F.relu(positive - negative + margin).mean()
    info = {"dist_ap": positive.mean().detach(), "dist_an": negative.mean().detach(),
            "active": (positive - negative + margin > 0).float().mean()}
    return loss, info


def batch_hard_triplet_loss(embeddings: torch.Tensor, pids: torch.Tensor, margin: float = 0.3
                            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 7 with batch-hard mining on Euclidean distances: mean over anchors of max(d_ap - d_an + margin, 0)."""
    return _margin_loss(*hard_mining(pairwise_euclidean(embeddings), pids), margin)


def gaussian_kl(mu1: torch.Tensor, logvar1: torch.Tensor | None, mu2: torch.Tensor, logvar2: torch.Tensor | None
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


def _expected_softplus_gaussian(mean: torch.Tensor, std: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """E[softplus(Y)], Y ~ N(mean, std^2), by Gauss-Hermite quadrature (elementwise over the inputs)."""
    nodes, weights = (torch.as_tensor(a, dtype=mean.dtype, device=mean.device) for a in _hermite(num_nodes))
    return (F.softplus(mean.unsqueeze(-1) + std.unsqueeze(-1) * nodes) * weights).sum(dim=-1)


def js_isotropic_from_sq_distance(squared_distance: torch.Tensor, num_nodes: int = 64) -> torch.Tensor:
    """JS (nats) between N(mu1, I) and N(mu2, I) given |mu1 - mu2|^2: log 2 - E_t[softplus(d t - d^2/2)], t ~ N(0, 1)."""
    d = squared_distance.clamp_min(1e-12).sqrt()
    return (LOG2 - _expected_softplus_gaussian(-0.5 * squared_distance, d, num_nodes)).clamp_min(0.0)


def _expected_softplus_quadratic(offset, quadratic, linear, exact_dims: int, num_nodes: int) -> torch.Tensor:
    """E[softplus(offset + sum_k quadratic_k (eps_k^2 - 1) + linear_k eps_k)], eps ~ N(0, I) over the last dimension.

    The `exact_dims` terms with the largest |quadratic_k| (the non-Gaussian part) are integrated by tensor-product
    Gauss-Hermite; the sum of the other terms is replaced by the normal with its exact mean 0 and variance
    sum(2 quadratic^2 + linear^2), also integrated by Gauss-Hermite. Exact up to quadrature error when
    dim <= exact_dims or when the remaining quadratic coefficients are 0 (equal covariances).
    """
    nodes, weights = (torch.as_tensor(a, dtype=offset.dtype, device=offset.device) for a in _hermite(num_nodes))
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
    return (F.softplus(values) * grid_weights).flatten(-exact_dims - 1).sum(-1)


def _half_js_term(mu_p, logvar_p, mu_q, logvar_q, exact_dims: int, num_nodes: int) -> torch.Tensor:
    """E_p[softplus(log q - log p)]; at x = mu_p + std_p * eps the log-ratio is quadratic in eps:

    log q(x) - log p(x) = -KL(p || q) + sum_k a_k (eps_k^2 - 1) + b_k eps_k,
    a = (1 - var_p / var_q) / 2,  b = -std_p (mu_p - mu_q) / var_q.
    """
    ratio = torch.exp(logvar_p - logvar_q)
    quadratic = 0.5 * (1.0 - ratio)
    linear = -torch.exp(0.5 * logvar_p - logvar_q) * (mu_p - mu_q)
    kl = 0.5 * (ratio - 1.0 - (logvar_p - logvar_q) + (mu_p - mu_q).pow(2) * torch.exp(-logvar_q)).sum(dim=-1)
    return _expected_softplus_quadratic(-kl, quadratic, linear, exact_dims, num_nodes)


def gaussian_js(mu1: torch.Tensor, logvar1: torch.Tensor | None, mu2: torch.Tensor, logvar2: torch.Tensor | None, *,
                num_nodes: int = 64, exact_dims: int = 2, general_nodes: int = 16) -> torch.Tensor:
    """Jensen-Shannon divergence (nats, in [0, log 2]) of two diagonal Gaussians over the last dimension (broadcasts).

    Both log-variances None: identity covariances, exact up to quadrature error (num_nodes Gauss-Hermite nodes).
    Otherwise (None read as zeros): the estimator of the module docstring, with `exact_dims` dimensions integrated
    exactly and `general_nodes` Gauss-Hermite nodes per quadrature axis.
    """
    if logvar1 is None and logvar2 is None:
        return js_isotropic_from_sq_distance((mu1 - mu2).pow(2).sum(dim=-1), num_nodes)
    logvar1 = torch.zeros_like(mu1) if logvar1 is None else logvar1
    logvar2 = torch.zeros_like(mu2) if logvar2 is None else logvar2
    mu1, logvar1, mu2, logvar2 = torch.broadcast_tensors(mu1, logvar1, mu2, logvar2)
    expected = (_half_js_term(mu1, logvar1, mu2, logvar2, exact_dims, general_nodes)
                + _half_js_term(mu2, logvar2, mu1, logvar1, exact_dims, general_nodes))
    return (LOG2 - 0.5 * expected).clamp(0.0, LOG2)


def pairwise_gaussian_js(mu: torch.Tensor, logvar: torch.Tensor | None = None, **estimator) -> torch.Tensor:
    """B x B matrix of gaussian_js between the rows of a batch, all pairs at once (matmul distances when isotropic)."""
    if logvar is None:
        squared = mu.pow(2).sum(dim=1)
        d2 = (squared.unsqueeze(1) + squared.unsqueeze(0) - 2.0 * mu @ mu.t()).clamp_min(0.0)
        return js_isotropic_from_sq_distance(d2, estimator.get("num_nodes", 64))
    return gaussian_js(mu.unsqueeze(1), logvar.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0), **estimator)


def js_triplet_loss(mu: torch.Tensor, logvar: torch.Tensor | None, pids: torch.Tensor, margin: float = 0.5
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 9 with batch-hard mining by JS divergence; the margin applies to JS / log 2, which lies in [0, 1].

    The paper calls the JS divergence "bounded in [0, 1]", i.e. measured in bits; gamma = 0.5 is read on that scale.
    """
    return _margin_loss(*hard_mining(pairwise_gaussian_js(mu, logvar) / LOG2, pids), margin)

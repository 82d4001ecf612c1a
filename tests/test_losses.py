"""Loss terms against closed forms, torch.distributions, scipy numerical integration and brute-force loops."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from havana.losses import (batch_hard_triplet_loss, cross_entropy_label_smoothing, gaussian_js, gaussian_kl,
                           js_triplet_loss, pairwise_gaussian_js)

LOG2 = math.log(2.0)


def js_numeric_1d(mu1, var1, mu2, var2):
    """JS of two 1-D normals by scipy quad of 1/2 p log(p/m) + 1/2 q log(q/m)."""
    p, q = stats.norm(mu1, math.sqrt(var1)), stats.norm(mu2, math.sqrt(var2))

    def integrand(x):
        lp, lq = p.logpdf(x), q.logpdf(x)
        lm = np.logaddexp(lp, lq) - LOG2
        return 0.5 * np.exp(lp) * (lp - lm) + 0.5 * np.exp(lq) * (lq - lm)

    lo = min(mu1 - 15 * math.sqrt(var1), mu2 - 15 * math.sqrt(var2))
    hi = max(mu1 + 15 * math.sqrt(var1), mu2 + 15 * math.sqrt(var2))
    return integrate.quad(integrand, lo, hi, points=sorted({mu1, mu2, (mu1 + mu2) / 2}), limit=500, epsabs=1e-12)[0]


def js_numeric_2d(mu1, var1, mu2, var2, n=601):
    """JS of two 2-D diagonal normals by scipy Simpson integration on a fine grid."""
    axes = [np.linspace(min(mu1[k] - 12 * math.sqrt(var1[k]), mu2[k] - 12 * math.sqrt(var2[k])),
                        max(mu1[k] + 12 * math.sqrt(var1[k]), mu2[k] + 12 * math.sqrt(var2[k])), n) for k in range(2)]
    x, y = np.meshgrid(*axes, indexing="ij")
    lp = stats.norm.logpdf(x, mu1[0], math.sqrt(var1[0])) + stats.norm.logpdf(y, mu1[1], math.sqrt(var1[1]))
    lq = stats.norm.logpdf(x, mu2[0], math.sqrt(var2[0])) + stats.norm.logpdf(y, mu2[1], math.sqrt(var2[1]))
    lm = np.logaddexp(lp, lq) - LOG2
    f = 0.5 * np.exp(lp) * (lp - lm) + 0.5 * np.exp(lq) * (lq - lm)
    return integrate.simpson(integrate.simpson(f, x=axes[1], axis=1), x=axes[0])


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu1, mu2, lv1, lv2 = (torch.randn(5, 7, generator=g, dtype=torch.float64) for _ in range(4))
    normal = torch.distributions.Normal
    expected = torch.distributions.kl_divergence(
        torch.distributions.Independent(normal(mu1, lv1.mul(0.5).exp()), 1),
        torch.distributions.Independent(normal(mu2, lv2.mul(0.5).exp()), 1))
    torch.testing.assert_close(gaussian_kl(mu1, lv1, mu2, lv2), expected)
    standard = torch.distributions.Independent(normal(torch.zeros_like(mu2), torch.ones_like(mu2)), 1)
    torch.testing.assert_close(gaussian_kl(mu1, lv1, torch.zeros_like(mu2), None),
                               torch.distributions.kl_divergence(
                                   torch.distributions.Independent(normal(mu1, lv1.mul(0.5).exp()), 1), standard))


@pytest.mark.parametrize("d", [0.0, 0.3, 1.0, 2.0, 3.5, 5.0, 8.0, 20.0])
def test_isotropic_js_matches_quadrature_within_1e4(d):
    reference = js_numeric_1d(0.0, 1.0, d, 1.0)
    # The same distance spread over 6 dimensions: the identity-covariance JS depends on |mu1 - mu2| only.
    direction = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, 1.0], dtype=torch.float64)
    mu1 = torch.tensor([0.3, 1.0, -2.0, 0.0, 4.0, 1.0], dtype=torch.float64)
    mu2 = mu1 + d * direction / direction.norm()
    assert abs(gaussian_js(mu1, None, mu2, None).item() - reference) < 1e-4


@pytest.mark.parametrize("seed", range(6))
def test_general_js_matches_integration_in_1d(seed):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(0.0, 1.5, 2)
    lv1, lv2 = rng.uniform(-1.5, 1.5, 2)  # variance ratios up to e^6
    reference = js_numeric_1d(mu1, math.exp(lv1), mu2, math.exp(lv2))
    estimate = gaussian_js(*(torch.tensor([v], dtype=torch.float64) for v in (mu1, lv1, mu2, lv2))).item()
    assert abs(estimate - reference) < 0.05 * reference


@pytest.mark.parametrize("seed", range(4))
def test_general_js_matches_integration_in_2d(seed):
    rng = np.random.default_rng(100 + seed)
    mu1, mu2 = rng.normal(0.0, 1.5, 2), rng.normal(0.0, 1.5, 2)
    lv1, lv2 = rng.uniform(-1.0, 1.0, 2), rng.uniform(-1.0, 1.0, 2)
    reference = js_numeric_2d(mu1, np.exp(lv1), mu2, np.exp(lv2))
    estimate = gaussian_js(*(torch.tensor(v, dtype=torch.float64) for v in (mu1, lv1, mu2, lv2))).item()
    assert abs(estimate - reference) < 0.05 * reference


def test_js_is_symmetric_bounded_and_zero_on_identical():
    g = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(10, 16, generator=g) * 2, torch.randn(10, 16, generator=g) * 2
    lv1, lv2 = torch.randn(10, 16, generator=g) * 0.5, torch.randn(10, 16, generator=g) * 0.5
    for a, b in [(lv1, lv2), (None, None)]:
        forward, backward = gaussian_js(mu1, a, mu2, b), gaussian_js(mu2, b, mu1, a)
        torch.testing.assert_close(forward, backward, atol=1e-5, rtol=1e-5)
        assert (forward >= 0).all() and (forward <= LOG2).all()
    assert gaussian_js(mu1, lv1, mu1, lv1).abs().max() < 1e-5
    assert gaussian_js(mu1, None, mu1, None).abs().max() < 1e-5


def test_js_far_apart_float32_is_log2_with_finite_gradients():
    for logvar in [None, torch.zeros(8)]:
        mu1 = torch.zeros(8, requires_grad=True)
        mu2 = torch.zeros(8)
        mu2[0] = 100.0
        lv = None if logvar is None else logvar.clone().requires_grad_(True)
        js = gaussian_js(mu1, lv, mu2, None if lv is None else torch.zeros(8))
        assert torch.isfinite(js) and abs(js.item() - LOG2) < 1e-5
        js.backward()
        assert torch.isfinite(mu1.grad).all()
        if lv is not None:
            assert torch.isfinite(lv.grad).all()


def test_js_gradients_are_finite_at_identical_inputs_and_match_finite_differences():
    mu = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    for logvar in [None, torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)]:
        pairwise_gaussian_js(torch.cat([mu, mu]), None if logvar is None else torch.cat([logvar, logvar])).sum().backward()
        assert torch.isfinite(mu.grad).all()
    g = torch.Generator().manual_seed(2)
    inputs = [torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    assert torch.autograd.gradcheck(lambda a, b, c, d: gaussian_js(a, b * 0.5, c, d * 0.5), inputs)
    assert torch.autograd.gradcheck(lambda a, c: gaussian_js(a, None, c, None), [inputs[0], inputs[2]])


def test_pairwise_js_equals_elementwise():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(6, 12, generator=g, dtype=torch.float64), torch.randn(6, 12, generator=g, dtype=torch.float64) * 0.3
    for lv in [logvar, None]:
        pairwise = pairwise_gaussian_js(mu, lv)
        brute = torch.stack([torch.stack([gaussian_js(mu[i], None if lv is None else lv[i], mu[j],
                                                      None if lv is None else lv[j]) for j in range(6)]) for i in range(6)])
        torch.testing.assert_close(pairwise, brute, atol=1e-6, rtol=1e-6)


def test_js_triplet_loss_on_a_hand_built_batch():
    # 1-D unit-variance Gaussians: id 0 at 0 and 1, id 1 at 3 and 10. JS depends on the distance only.
    mu = torch.tensor([[0.0], [1.0], [3.0], [10.0]], dtype=torch.float64)
    pids = torch.tensor([0, 0, 1, 1])
    js = {d: js_numeric_1d(0.0, 1.0, d, 1.0) / LOG2 for d in (1.0, 2.0, 3.0, 7.0, 9.0, 10.0)}
    # anchor 0: pos d=1, hardest neg d=3; anchor 1: pos 1, neg 2; anchor 2: pos 7, neg 2; anchor 3: pos 7, neg 9.
    per_anchor = [max(js[1.0] - js[3.0] + 0.5, 0), max(js[1.0] - js[2.0] + 0.5, 0),
                  max(js[7.0] - js[2.0] + 0.5, 0), max(js[7.0] - js[9.0] + 0.5, 0)]
    loss, info = js_triplet_loss(mu, None, pids, margin=0.5)
    assert abs(loss.item() - sum(per_anchor) / 4) < 1e-4
    assert abs(info["dist_ap"].item() - (2 * js[1.0] + 2 * js[7.0]) / 4) < 1e-4
    # the margin is on the JS / log 2 scale: a JS-of-1-bit gap with margin 1 is exactly at the hinge
    far = torch.tensor([[0.0], [0.0], [1000.0], [1000.0]], dtype=torch.float64)
    assert abs(js_triplet_loss(far, None, pids, margin=1.0)[0].item()) < 1e-6


def test_batch_hard_triplet_matches_brute_force():
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(12, 5, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    expected = []
    for a in range(12):
        pos = max((emb[a] - emb[p]).norm().item() for p in range(12) if pids[p] == pids[a])
        neg = min((emb[a] - emb[n]).norm().item() for n in range(12) if pids[n] != pids[a])
        expected.append(max(pos - neg + 0.3, 0.0))
    loss, _ = batch_hard_triplet_loss(emb, pids, margin=0.3)
    assert abs(loss.item() - np.mean(expected)) < 1e-6


def test_cross_entropy_label_smoothing_matches_smoothed_targets():
    g = torch.Generator().manual_seed(5)
    logits, targets = torch.randn(6, 9, generator=g, dtype=torch.float64), torch.tensor([0, 3, 8, 1, 1, 5])
    smooth = torch.full((6, 9), 0.1 / 9, dtype=torch.float64)
    smooth[torch.arange(6), targets] += 0.9
    expected = -(smooth * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(cross_entropy_label_smoothing(logits, targets, 0.1), expected)
    torch.testing.assert_close(cross_entropy_label_smoothing(logits, targets, 0.0),
                               torch.nn.functional.cross_entropy(logits, targets))

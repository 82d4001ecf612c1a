"""Loss terms against closed forms, torch.distributions, scipy numerical integration and brute-force loops."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from havana.errors import HavanaError
from havana.models.losses import (
    batch_hard_triplet_loss,
    cross_entropy_label_smoothing,
    gaussian_js,
    gaussian_js_per_dim,
    gaussian_kl,
    js_bits,
    js_triplet_loss,
    pairwise_js_bits,
    pairwise_js_mining_scores,
)

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
    axes = [
        np.linspace(
            min(mu1[k] - 12 * math.sqrt(var1[k]), mu2[k] - 12 * math.sqrt(var2[k])),
            max(mu1[k] + 12 * math.sqrt(var1[k]), mu2[k] + 12 * math.sqrt(var2[k])),
            n,
        )
        for k in range(2)
    ]
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
        torch.distributions.Independent(normal(mu2, lv2.mul(0.5).exp()), 1),
    )
    torch.testing.assert_close(gaussian_kl(mu1, lv1, mu2, lv2), expected)
    standard = torch.distributions.Independent(normal(torch.zeros_like(mu2), torch.ones_like(mu2)), 1)
    torch.testing.assert_close(
        gaussian_kl(mu1, lv1, torch.zeros_like(mu2), None),
        torch.distributions.kl_divergence(
            torch.distributions.Independent(normal(mu1, lv1.mul(0.5).exp()), 1), standard
        ),
    )


@pytest.mark.parametrize("d", [0.0, 0.3, 1.0, 2.0, 3.5, 5.0, 8.0, 20.0])
def test_isotropic_js_matches_quadrature_within_1e6(d):
    reference = js_numeric_1d(0.0, 1.0, d, 1.0)
    # The same distance spread over 6 dimensions: the identity-covariance JS depends on |mu1 - mu2| only.
    direction = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, 1.0], dtype=torch.float64)
    mu1 = torch.tensor([0.3, 1.0, -2.0, 0.0, 4.0, 1.0], dtype=torch.float64)
    mu2 = mu1 + d * direction / direction.norm()
    assert abs(gaussian_js(mu1, None, mu2, None).item() - reference) < 1e-6


# The documented accuracy (havana/models/losses.py docstring) of the joint estimator in 1-D (32 nodes), by
# |logvar_p - logvar_q|; the per-dimension JS (spline table) is within 1e-7 everywhere (tests/test_js_table.py).
ERROR_BOUNDS = [(1.0, 4e-4), (2.0, 3e-3), (3.0, 1.5e-2), (6.0, 7e-2)]


def documented_bound(delta_logvar):
    return next(bound for limit, bound in ERROR_BOUNDS if abs(delta_logvar) <= limit + 1e-12)


@pytest.mark.parametrize("limit,bound", ERROR_BOUNDS)
def test_joint_js_in_1d_meets_its_documented_bound(limit, bound):
    worst = 0.0
    for delta in np.linspace(0.0, limit, 5):
        for dmu in (0.0, 0.3, 1.0, 2.0, 4.0, 8.0):
            for lv1 in (delta / 2, -delta / 2):
                reference = js_numeric_1d(0.0, math.exp(lv1), dmu, math.exp(-lv1))
                t = [torch.tensor([v], dtype=torch.float64) for v in (0.0, lv1, dmu, -lv1)]
                worst = max(worst, abs(gaussian_js(*t).item() - reference))
                assert abs(gaussian_js_per_dim(*t).item() - reference) < 1e-6
    print(f"|dlogvar| <= {limit}: worst absolute error {worst:.2e} nats (documented bound {bound:.0e})")
    assert worst <= bound


@pytest.mark.parametrize("seed", range(6))
def test_general_js_matches_integration_in_1d(seed):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(0.0, 1.5, 2)
    lv1, lv2 = rng.uniform(-1.5, 1.5, 2)  # variance ratios up to e^3 either way
    reference = js_numeric_1d(mu1, math.exp(lv1), mu2, math.exp(lv2))
    estimate = gaussian_js(*(torch.tensor([v], dtype=torch.float64) for v in (mu1, lv1, mu2, lv2))).item()
    assert abs(estimate - reference) <= documented_bound(lv1 - lv2)


@pytest.mark.parametrize("seed", range(4))
def test_general_js_matches_integration_in_2d(seed):
    rng = np.random.default_rng(100 + seed)
    mu1, mu2 = rng.normal(0.0, 1.5, 2), rng.normal(0.0, 1.5, 2)
    lv1, lv2 = rng.uniform(-1.0, 1.0, 2), rng.uniform(-1.0, 1.0, 2)
    reference = js_numeric_2d(mu1, np.exp(lv1), mu2, np.exp(lv2))
    estimate = gaussian_js(*(torch.tensor(v, dtype=torch.float64) for v in (mu1, lv1, mu2, lv2))).item()
    assert abs(estimate - reference) <= 2 * documented_bound(np.abs(lv1 - lv2).max())


def test_general_js_matches_monte_carlo_in_8d():
    g = torch.Generator().manual_seed(7)
    mu1, mu2 = (
        torch.randn(8, generator=g, dtype=torch.float64) * 0.5,
        torch.randn(8, generator=g, dtype=torch.float64) * 0.5,
    )
    lv1, lv2 = (
        torch.rand(8, generator=g, dtype=torch.float64) - 0.5,
        torch.rand(8, generator=g, dtype=torch.float64) - 0.5,
    )
    p = torch.distributions.Independent(torch.distributions.Normal(mu1, lv1.mul(0.5).exp()), 1)
    q = torch.distributions.Independent(torch.distributions.Normal(mu2, lv2.mul(0.5).exp()), 1)
    halves = []
    for own, other in ((p, q), (q, p)):
        x = own.sample((400_000,))
        log_own, log_other = own.log_prob(x), other.log_prob(x)
        halves.append(log_own - (torch.logaddexp(log_own, log_other) - LOG2))  # log p - log m under p
    samples = 0.5 * (halves[0] + halves[1])
    reference, stderr = samples.mean().item(), samples.std().item() / math.sqrt(len(samples))
    estimate = gaussian_js(mu1, lv1, mu2, lv2).item()
    print(f"8-D JS: estimate {estimate:.5f}, Monte Carlo {reference:.5f} +- {stderr:.5f}")
    assert abs(estimate - reference) < 4 * stderr + 0.01 * reference


def test_mean_dim_reading_is_the_mean_of_one_dimensional_js_in_bits():
    mu1, lv1 = [0.0, 1.0, -0.5], [0.2, -0.4, 0.0]
    mu2, lv2 = [0.5, -1.0, 2.5], [-0.3, 0.1, 0.6]
    per_dim = [js_numeric_1d(mu1[k], math.exp(lv1[k]), mu2[k], math.exp(lv2[k])) / LOG2 for k in range(3)]
    t = [torch.tensor(v, dtype=torch.float64) for v in (mu1, lv1, mu2, lv2)]
    assert abs(js_bits(*t).item() - np.mean(per_dim)) < 1e-6
    assert (
        abs(
            js_bits(t[0], None, t[2], None).item()
            - np.mean([js_numeric_1d(mu1[k], 1.0, mu2[k], 1.0) / LOG2 for k in range(3)])
        )
        < 1e-6
    )
    one = [v[:1] for v in t]  # the same divergence in 1-D, up to the joint estimator's quadrature error
    assert abs(js_bits(*one, "mean_dim").item() - js_bits(*one, "joint").item()) < documented_bound(0.5) / LOG2
    with pytest.raises(HavanaError, match="unknown JS divergence"):
        js_bits(*t, "sum")


def bnneck_batch(ids=8, per_id=4, dim=2048, seed=0):
    """Means at the scale of BoT's BNNeck features: per-dimension spread about 0.5-1, identities tens apart in
    Euclidean distance, and identities in look-alike pairs so that batch-hard triplets are active."""
    g = torch.Generator().manual_seed(seed)
    pairs = torch.randn(ids // 2, dim, generator=g) * 0.6
    centers = pairs.repeat_interleave(2, 0) + torch.randn(ids, dim, generator=g) * 0.1
    mu = centers.repeat_interleave(per_id, 0) + torch.randn(ids * per_id, dim, generator=g) * 0.4
    return mu, torch.arange(ids).repeat_interleave(per_id)


# The default (mean_dim) JS triplet's gradient norm on the means over the Euclidean batch-hard triplet's, on
# bnneck_batch(), measured with the spline-table JS (commit 9804909, torch 2.14.1 CPU): 5.408e-3 with C, 5.362e-3 with
# a learned sigma. The test asks for at least JS_RATIO_MARGIN of that: a change of the estimator, of float summation
# order or of torch passes, a lost factor of 1.25 in the gradient does not.
JS_RATIO_MEASURED = {"identity (C)": 5.408e-3, "learned": 5.362e-3}
JS_RATIO_MARGIN = 0.8


def test_js_triplet_trains_at_paper_scale():
    """At 2048-d and BNNeck scale the default JS triplet keeps a gradient on the means of at least JS_RATIO_MARGIN of
    its measured ratio to the Euclidean batch-hard triplet's on the same batch; the joint reading saturates (the
    evidence for the default)."""
    mu, pids = bnneck_batch()
    distances = torch.cdist(mu, mu)
    same = pids[:, None] == pids[None]
    print(
        f"Euclidean: positives {distances[same & (distances > 0)].mean():.1f}, "
        f"negatives {distances[~same].mean():.1f}, "
        f"per-dim spread {mu.std(0).mean():.2f}"
    )
    leaf = mu.clone().requires_grad_(True)
    triplet, info = batch_hard_triplet_loss(leaf, pids, margin=0.3)
    reference = torch.autograd.grad(triplet, leaf)[0].norm().item()
    assert info["active"].item() > 0.5 and reference > 0.1
    g = torch.Generator().manual_seed(1)
    logvars = {"identity (C)": None, "learned": torch.randn(mu.shape, generator=g) * 0.3}
    for name, logvar in logvars.items():
        for divergence in ("mean_dim", "joint"):
            loss, info = js_triplet_loss(leaf, logvar, pids, 0.5, divergence=divergence)
            ratio = torch.autograd.grad(loss, leaf)[0].norm().item() / reference
            print(
                f"{name:13s} {divergence:8s} jst {loss.item():.4f}  ap {info['dist_ap'].item():.4f} bits  "
                f"an {info['dist_an'].item():.4f} bits  gradient ratio to the Euclidean triplet {ratio:.3e}"
            )
            if divergence == "mean_dim":
                assert ratio >= JS_RATIO_MARGIN * JS_RATIO_MEASURED[name], (name, ratio)
                assert 0.0 < info["dist_ap"].item() < info["dist_an"].item() < 1.0
            else:
                assert ratio < 1e-6  # the joint 2048-d JS is log 2 for every pair: no gradient


def test_js_triplet_is_the_hinge_on_the_mined_pairs():
    g = torch.Generator().manual_seed(8)
    mu = torch.randn(12, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    logvar = (torch.randn(12, 6, generator=g, dtype=torch.float64) * 0.3).requires_grad_(True)
    pids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    same = pids[:, None] == pids[None]
    for divergence in ("mean_dim", "joint"):
        for lv in (logvar, None):
            loss, info = js_triplet_loss(mu, lv, pids, 0.5, divergence)
            full = pairwise_js_bits(mu, lv, divergence)  # brute force: every pair's JS, with its gradient
            # "joint" mines by the JS itself, "mean_dim" by the stand-in (its agreement: tests/test_js_table.py)
            detached = None if lv is None else lv.detach()
            ranking = full.detach() if divergence == "joint" else pairwise_js_mining_scores(mu.detach(), detached)
            positive = full.gather(1, ranking.masked_fill(~same, float("-inf")).argmax(1, keepdim=True))
            negative = full.gather(1, ranking.masked_fill(same, float("inf")).argmin(1, keepdim=True))
            expected = torch.relu(positive - negative + 0.5).mean()
            torch.testing.assert_close(loss, expected)
            inputs = [mu] if lv is None else [mu, lv]
            for mine, brute in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(expected, inputs)):
                torch.testing.assert_close(mine, brute)


def test_mining_stand_in_ranks_pairs_like_the_mean_dim_js():
    mu, pids = bnneck_batch(ids=4, per_id=4, dim=256)
    g = torch.Generator().manual_seed(3)
    for logvar in (None, torch.randn(mu.shape, generator=g) * 0.3):
        js = pairwise_js_bits(mu, logvar).flatten()
        proxy = pairwise_js_mining_scores(mu, logvar).flatten()
        ranks = lambda v: v.argsort().argsort().double()  # noqa: E731
        spearman = torch.corrcoef(torch.stack([ranks(js), ranks(proxy)]))[0, 1].item()
        print(f"Spearman rank correlation of the mining stand-in and mean per-dim JS: {spearman:.5f}")
        assert spearman > 0.985  # measured 0.9905 (identity), 0.9888 (learned sigma)


def test_js_triplet_loss_on_a_hand_built_batch():
    # 1-D unit-variance Gaussians: id 0 at 0 and 1, id 1 at 3 and 10. JS depends on the distance only.
    mu = torch.tensor([[0.0], [1.0], [3.0], [10.0]], dtype=torch.float64)
    pids = torch.tensor([0, 0, 1, 1])
    js = {d: js_numeric_1d(0.0, 1.0, d, 1.0) / LOG2 for d in (1.0, 2.0, 3.0, 7.0, 9.0, 10.0)}
    # anchor 0: pos d=1, hardest neg d=3; anchor 1: pos 1, neg 2; anchor 2: pos 7, neg 2; anchor 3: pos 7, neg 9.
    per_anchor = [
        max(js[1.0] - js[3.0] + 0.5, 0),
        max(js[1.0] - js[2.0] + 0.5, 0),
        max(js[7.0] - js[2.0] + 0.5, 0),
        max(js[7.0] - js[9.0] + 0.5, 0),
    ]
    loss, info = js_triplet_loss(mu, None, pids, margin=0.5)
    assert abs(loss.item() - sum(per_anchor) / 4) < 1e-4
    assert abs(info["dist_ap"].item() - (2 * js[1.0] + 2 * js[7.0]) / 4) < 1e-4
    # the margin is on the JS / log 2 scale: a JS-of-1-bit gap with margin 1 is exactly at the hinge
    far = torch.tensor([[0.0], [0.0], [1000.0], [1000.0]], dtype=torch.float64)
    assert abs(js_triplet_loss(far, None, pids, margin=1.0)[0].item()) < 1e-6


def test_the_margin_acts_only_through_inactive_hinges():
    """Hand check of why Table 4's margins can give identical heads. 1-D unit-variance Gaussians: id 0 at 0 and 1,
    id 1 at 3 and 10. Per anchor, the gap D(a, n) - D(a, p) in bits (scipy quadrature): anchor 0: f(3) - f(1) = 0.599,
    anchor 1: f(2) - f(1) = 0.325, anchor 2: f(2) - f(7) < 0, anchor 3: f(9) - f(7) ~ 0. A hinge is inactive where
    the gap exceeds the margin: at 0.3 anchors 0 and 1 (active 1/2), at 0.5 anchor 0 (3/4), at 0.65 and 0.7 none.
    While every hinge is active the loss is margin + mean(D(a, p) - D(a, n)): raising the margin adds exactly the
    difference and leaves the gradient unchanged (bit for bit), so the head trains identically."""
    f = {d: js_numeric_1d(0.0, 1.0, d, 1.0) / LOG2 for d in (1.0, 2.0, 3.0, 7.0, 9.0)}
    gaps = [f[3.0] - f[1.0], f[2.0] - f[1.0], f[2.0] - f[7.0], f[9.0] - f[7.0]]
    assert abs(gaps[0] - 0.599) < 1e-3 and abs(gaps[1] - 0.325) < 1e-3 and gaps[2] < 0 and abs(gaps[3]) < 1e-3
    pids = torch.tensor([0, 0, 1, 1])
    results = {}
    for margin in (0.3, 0.5, 0.65, 0.7):
        mu = torch.tensor([[0.0], [1.0], [3.0], [10.0]], dtype=torch.float64, requires_grad=True)
        logvar = torch.zeros(4, 1, dtype=torch.float64, requires_grad=True)
        loss, info = js_triplet_loss(mu, logvar, pids, margin)
        expected_active = sum(margin > gap for gap in gaps) / 4
        expected_loss = sum(max(margin - gap, 0.0) for gap in gaps) / 4
        assert info["active"].item() == expected_active
        assert abs(loss.item() - expected_loss) < 1e-4
        results[margin] = (loss, torch.autograd.grad(loss, [mu, logvar]))
    (low, low_grads), (high, high_grads) = results[0.65], results[0.7]
    assert abs((high - low).item() - 0.05) < 1e-12  # every hinge active: the margin is a constant
    for a, b in zip(low_grads, high_grads):
        assert torch.equal(a, b)
    for margin in (0.3, 0.5):  # some hinge inactive: the gradient depends on the margin
        assert not torch.equal(results[margin][1][0], high_grads[0])


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
    torch.testing.assert_close(
        cross_entropy_label_smoothing(logits, targets, 0.0), torch.nn.functional.cross_entropy(logits, targets)
    )

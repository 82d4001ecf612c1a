"""The HAVANA head on extractor features: VNAE (Sect. 3.2), HVD (Sect. 3.4), covariance constraint (Sect. 3.5), and
the ablation-row loss (Eq. 5-14, Algorithm 1) as a pure function of a batch.

Readings (DESIGN.md): f_mu, f_sigma and the decoder are Linear-act-Linear of feature width; f_sigma outputs a
log-variance; the classifier reads z_mu; q(v | z, y) and p(z | v, y) take a sample and the one-hot identity (a
Linear on [s, onehot(y)] is written as Linear(s) + an embedding of y, the same function without the one-hot matmul).
The covariance constraint fixes z_sigma = I: f_sigma is not built and L_klz becomes L_reconz + KL(N(z_mu, I) || N(0,
I)).
Loss scale (paper silent): reconstruction MSEs and KL terms are per-element means, so a global 1/D scales the whole
ELBO and beta keeps its beta-VAE meaning while alpha weighs the ELBO against the per-sample cls and triplet losses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from havana.config import Limit, above, at_least, between, from_mapping, section
from havana.errors import HavanaError
from havana.models import losses
from havana.utils import torch_io
from havana.utils.atomic import atomic_path

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
TERMS = ("cls", "triplet", "jst", "reconx", "klz", "reconz", "klv")
LOGVAR_BOUND = 10.0  # log-variances are soft-bounded to (-10, 10): exp never overflows, even in float16


def bound_logvar(raw: torch.Tensor) -> torch.Tensor:
    """LOGVAR_BOUND * tanh(raw / LOGVAR_BOUND): the identity near 0 (slope 1), smooth, inside (-10, 10)."""
    return LOGVAR_BOUND * torch.tanh(raw / LOGVAR_BOUND)


@dataclass
class RowConfig:
    """One ablation row (config `heads.rows.<name>`): which loss terms are on, the constraint, and the weights."""

    cls: bool = True  # L_cls: CE with label smoothing on classifier(z_mu)
    triplet: bool = False  # Eq. 7: batch-hard Euclidean triplet on z_mu
    jst: bool = True  # Eq. 9: batch-hard JS triplet on N(z_mu, z_sigma^2)
    reconx: bool = True  # L_reconx = MSE(x, decoder(z_sample))
    klz: bool = True  # KL(q(z|x) || p(z|v,y)) with HVD, KL(q(z|x) || N(0,I)) without; under C: KL(N(z_mu,I) || N(0,I))
    reconz: bool = False  # L_reconz = MSE(z_mu, z~_mu) (the covariance constraint's rewrite of L_klz; needs HVD)
    klv: bool = False  # L_klv = KL(q(v|z,y) || N(0, I))
    constraint: bool = False  # covariance constraint C: z_sigma = I
    alpha: float = 0.2  # ELBO weight (Sect. 4.3: 0.2)
    beta: float | None = None  # KL weight; None = the dataset's default (heads.beta_by_dataset: Market 1, MSMT 2)
    gamma: float = 0.5  # JS triplet margin, on the JS-in-bits scale [0, 1] (Table 4: 0.5)
    js_divergence: str = "mean_dim"  # D_JS of Eq. 9: mean over dimensions of the per-dimension JS in bits, or "joint"
    lam: float = 1.0  # weight of the (JS) triplet loss (Sect. 4.3: 1.0)
    triplet_margin: float = 0.3  # Euclidean triplet margin (paper silent; BoT's 0.3)

    LIMITS: ClassVar[dict[str, Limit]] = {
        "alpha": at_least(0),
        "beta": at_least(0),
        "gamma": at_least(0),
        "lam": at_least(0),
        "triplet_margin": at_least(0),
    }

    def __post_init__(self) -> None:
        if self.triplet and self.jst:
            raise HavanaError("a head row uses the Euclidean triplet or the JS triplet, not both; switch one off.")
        if self.reconz and not self.constraint:
            raise HavanaError("reconz is the covariance constraint's rewrite of L_klz; set constraint: true with it.")
        if self.js_divergence not in losses.JS_DIVERGENCES:
            raise HavanaError(
                f"unknown js_divergence '{self.js_divergence}'; choose one of {', '.join(losses.JS_DIVERGENCES)}."
            )

    @property
    def uses_hvd(self) -> bool:
        """HVD is built when klv or reconz is on; without C, klz then measures KL(q(z | x) || p(z | v, y))."""
        return self.klv or self.reconz

    def with_beta(self, default_beta: float) -> RowConfig:
        """This row with beta resolved from the dataset default when it is None."""
        return self if self.beta is not None else replace(self, beta=float(default_beta))


def resolve_row(config: Mapping[str, Any], row: str, dataset: str) -> RowConfig:
    """`heads.rows.<row>` as trained on `dataset`: its beta, or the dataset's `heads.beta_by_dataset` entry when the
    row leaves beta null. The one resolution used by training, `havana plan` and the figures: a dataset missing from
    beta_by_dataset is the same one-sentence error in all three."""
    config = dict(config)
    resolved = from_mapping(RowConfig, section(config, "heads", "rows", row), f"heads.rows.{row}")
    if resolved.beta is not None:
        return resolved
    return resolved.with_beta(section(config, "heads", "beta_by_dataset", dataset))


@dataclass
class HeadTrainConfig:
    """How a head is trained (config `heads.train`); defaults are the paper's Sect. 4.1."""

    epochs: int = 300  # no learning-rate decay
    lr: float = 1.0e-5
    weight_decay: float = 5.0e-4
    p: int = 16  # identities per batch
    k: int = 4  # images per identity (batch 64)
    optimizer: str = "adam"  # paper silent; its anchor (reid-strong-baseline) trains with Adam, which lr 1e-5 fits
    label_smoothing: float = 0.1  # BoT's epsilon
    activation: str = "relu"  # MLP non-linearity (paper: "simple MLPs with non-linear activations")
    variation_dim: int | None = None  # size of v; None = the latent size (paper silent)
    device: str = "auto"  # "auto" (a free GPU when present), "cpu", "cuda", "cuda:N"
    checkpoint_minutes: float = 10.0  # checkpoint after this much wall-clock time and on SIGTERM; 0: every epoch

    LIMITS: ClassVar[dict[str, Limit]] = {
        "epochs": at_least(1),
        "lr": above(0),
        "weight_decay": at_least(0),
        "p": at_least(1),
        "k": at_least(1),
        "variation_dim": at_least(1),
        "label_smoothing": between(0, 1, high_open=True),
        "checkpoint_minutes": at_least(0),
    }


@dataclass
class HeadConfig:
    """Architecture of one head; saved inside head.pt so the checkpoint describes itself."""

    feature_dim: int  # input x: extractor feature size (2048 for ResNet-50, 512 for ResNet-18/34)
    num_classes: int  # training identities
    latent_dim: int | None = None  # z size; None = feature_dim (Sect. 4.4 counts a 2048 -> 2048 MLP)
    hidden_dim: int | None = None  # MLP width; None = feature_dim
    variation_dim: int | None = None  # v size; None = latent_dim
    hvd: bool = False  # build q(v | z, y) and p(z | v, y)
    constraint: bool = False  # z_sigma = I (no f_sigma)
    activation: str = "relu"

    def __post_init__(self) -> None:
        self.latent_dim = self.latent_dim or self.feature_dim
        self.hidden_dim = self.hidden_dim or self.feature_dim
        self.variation_dim = self.variation_dim or self.latent_dim
        if self.activation not in ACTIVATIONS:
            raise HavanaError(f"unknown activation '{self.activation}'; choose one of {', '.join(ACTIVATIONS)}.")


def _mlp(inputs: int, hidden: int, outputs: int, activation: str) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, outputs))


class ConditionalMLP(nn.Module):
    """Linear-act-Linear on [s, onehot(y)]: the one-hot part of the first layer is an embedding lookup."""

    def __init__(self, inputs: int, num_classes: int, hidden: int, outputs: int, activation: str) -> None:
        super().__init__()
        self.first = nn.Linear(inputs, hidden)
        self.label = nn.Embedding(num_classes, hidden)
        nn.init.normal_(self.label.weight, std=1.0 / (inputs + num_classes) ** 0.5)
        self.act = ACTIVATIONS[activation]()
        self.second = nn.Linear(hidden, outputs)

    def forward(self, sample: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.second(self.act(self.first(sample) + self.label(labels)))


class HavanaHead(nn.Module):
    """VNAE (f_mu, f_sigma, decoder, classifier on z_mu) with the optional HVD; inference embedding is z_mu."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        f, h, z, v, c, act = (
            config.feature_dim,
            config.hidden_dim,
            config.latent_dim,
            config.variation_dim,
            config.num_classes,
            config.activation,
        )
        self.f_mu = _mlp(f, h, z, act)
        self.f_sigma = None if config.constraint else _mlp(f, h, z, act)
        self.decoder = _mlp(z, h, f, act)
        self.classifier = nn.Linear(z, c, bias=False)  # BoT's classifier has no bias
        self.q_v = ConditionalMLP(z, c, h, 2 * v, act) if config.hvd else None
        self.p_z = ConditionalMLP(v, c, h, z if config.constraint else 2 * z, act) if config.hvd else None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_mu, z_logvar); z_logvar is 0 (z_sigma = I) under the covariance constraint."""
        z_mu = self.f_mu(x)
        return z_mu, torch.zeros_like(z_mu) if self.f_sigma is None else bound_logvar(self.f_sigma(x))


def _reparameterize(mu: torch.Tensor, logvar: torch.Tensor | None, noise: torch.Tensor | None) -> torch.Tensor:
    noise = torch.randn_like(mu) if noise is None else noise
    return mu + noise if logvar is None else mu + torch.exp(0.5 * logvar) * noise


def noise_widths(row: RowConfig, config: HeadConfig) -> dict[str, int]:
    """The standard-normal draws one sample of a batch takes in the row's loss, in the order _loss_terms takes them:
    z (reconx or HVD) then v (HVD). A training engine passes them to head_loss as `noise`, drawn from its own
    generators, so several heads trained together (vmap) draw what each would draw alone."""
    widths = {"z": config.latent_dim} if row.reconx or row.uses_hvd else {}
    return widths | ({"v": config.variation_dim} if row.uses_hvd else {})


def term_weights(row: RowConfig) -> dict[str, float]:
    """Each on term's weight in the total: cls 1, (triplet | jst) lam, reconx alpha, klz / klv / reconz alpha beta."""
    weights = {
        "cls": 1.0,
        "triplet": row.lam,
        "jst": row.lam,
        "reconx": row.alpha,
        "klz": row.alpha * row.beta,
        "klv": row.alpha * row.beta,
        "reconz": row.alpha * row.beta,
    }
    return {name: weights[name] for name in TERMS if getattr(row, name)}


def _loss_terms(
    model: HavanaHead,
    x: torch.Tensor,
    labels: torch.Tensor,
    row: RowConfig,
    label_smoothing: float,
    noise: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(z_mu, {term: value}, triplet mining info) of one batch; only the row's terms are computed. `noise` holds the
    reparameterisation draws named by noise_widths ([batch, width] each); None: drawn here from torch's global RNG."""
    noise = noise or {}
    if row.beta is None:
        raise HavanaError("the row's beta is unresolved; call row.with_beta(dataset default) first.")
    if row.uses_hvd and model.q_v is None:
        raise HavanaError("this row needs HVD but the head was built without it; build it with hvd=row.uses_hvd.")
    z_mu = model.f_mu(x)
    z_logvar = None if row.constraint else bound_logvar(model.f_sigma(x))
    terms: dict[str, torch.Tensor] = {}
    info: dict[str, torch.Tensor] = {}
    if row.cls:
        terms["cls"] = losses.cross_entropy_label_smoothing(model.classifier(z_mu), labels, label_smoothing)
    if row.triplet:
        terms["triplet"], info = losses.batch_hard_triplet_loss(z_mu, labels, row.triplet_margin)
    if row.jst:
        terms["jst"], info = losses.js_triplet_loss(z_mu, z_logvar, labels, row.gamma, row.js_divergence)
    needs_sample = row.reconx or row.uses_hvd
    z_sample = _reparameterize(z_mu, z_logvar, noise.get("z")) if needs_sample else None
    if row.reconx:
        terms["reconx"] = F.mse_loss(model.decoder(z_sample), x)
    z_tilde_mu = z_tilde_logvar = None
    if row.uses_hvd:
        v_mu, v_logvar = model.q_v(z_sample, labels).chunk(2, dim=1)
        v_logvar = bound_logvar(v_logvar)
        decoded = model.p_z(_reparameterize(v_mu, v_logvar, noise.get("v")), labels)
        if row.constraint:
            z_tilde_mu = decoded
        else:
            z_tilde_mu, z_tilde_logvar = decoded.chunk(2, dim=1)
            z_tilde_logvar = bound_logvar(z_tilde_logvar)
        if row.klv:
            terms["klv"] = losses.gaussian_kl(v_mu, v_logvar, torch.zeros_like(v_mu), None).mean() / v_mu.shape[1]
    if row.reconz:
        terms["reconz"] = F.mse_loss(z_tilde_mu, z_mu)
    if row.klz:
        if row.constraint or not row.uses_hvd:  # towards N(0, I)
            target_mu, target_logvar = torch.zeros_like(z_mu), None
        else:  # towards p(z | v, y)
            target_mu, target_logvar = z_tilde_mu, z_tilde_logvar
        terms["klz"] = losses.gaussian_kl(z_mu, z_logvar, target_mu, target_logvar).mean() / z_mu.shape[1]
    if not terms:
        raise HavanaError("the head row switches every loss term off; switch at least one on.")
    return z_mu, terms, info


def head_loss(
    model: HavanaHead,
    x: torch.Tensor,
    labels: torch.Tensor,
    row: RowConfig,
    label_smoothing: float = 0.1,
    noise: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Algorithm 1 for one batch: (total, {term: value}) with only the row's terms computed (off terms: no graph).

    total = cls + lam (triplet | jst) + alpha (reconx + beta (klz + klv [+ reconz under C])).
    `noise`: the reparameterisation draws (see noise_widths); None draws them from torch's global RNG.
    """
    _, terms, _ = _loss_terms(model, x, labels, row, label_smoothing, noise)
    weights = term_weights(row)
    return sum(weights[name] * value for name, value in terms.items()), terms


DIAGNOSTICS = ("hard_pos", "hard_neg", "active", *(f"grad_{term}" for term in TERMS))


def loss_diagnostics(
    model: HavanaHead, x: torch.Tensor, labels: torch.Tensor, row: RowConfig, label_smoothing: float = 0.1
) -> dict[str, float]:
    """What shows that each term is alive, measured on one batch (no parameter update):

    hard_pos / hard_neg: mean over anchors of the hardest positive's and hardest negative's divergence (JS in bits
    for jst, Euclidean distance for triplet; 0 when the row has neither); active: the fraction of anchors whose
    hinge is > 0; grad_<term>: the term's share of the gradient norm on z_mu, ||d(w_t L_t)/dz_mu|| / sum over on
    terms (0 for off terms), with w_t the term's weight in the total.
    """
    z_mu, terms, info = _loss_terms(model, x, labels, row, label_smoothing)
    weights = term_weights(row)
    norms = {
        name: torch.autograd.grad(weights[name] * value, z_mu, retain_graph=True)[0].norm()
        for name, value in terms.items()
    }
    total_norm = sum(norms.values()).clamp_min(1e-30)
    result = {
        "hard_pos": info.get("dist_ap", 0.0),
        "hard_neg": info.get("dist_an", 0.0),
        "active": info.get("active", 0.0),
    }
    result.update({f"grad_{name}": norms[name] / total_norm if name in norms else 0.0 for name in TERMS})
    return {name: float(value) for name, value in result.items()}


def build_head(feature_dim: int, num_classes: int, row: RowConfig, train: HeadTrainConfig) -> HavanaHead:
    """The head a row needs: HVD only when a term uses it, f_sigma only without the constraint."""
    return HavanaHead(
        HeadConfig(
            feature_dim=feature_dim,
            num_classes=num_classes,
            variation_dim=train.variation_dim,
            hvd=row.uses_hvd,
            constraint=row.constraint,
            activation=train.activation,
        )
    )


def save_head(path: str | os.PathLike, model: HavanaHead) -> None:
    """Write {config, state_dict} atomically, so load_head needs nothing else."""
    with atomic_path(path) as tmp:
        torch_io.save({"config": asdict(model.config), "state_dict": model.state_dict()}, tmp)


def load_head(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> HavanaHead:
    """Rebuild a head from its self-describing checkpoint, in eval mode."""
    payload = torch_io.load(
        path, what="head checkpoint", advice="run `havana train-head` to create it again", map_location=map_location
    )
    try:
        model = HavanaHead(HeadConfig(**payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise HavanaError(f"{path} is not a HAVANA head checkpoint ({exc.__class__.__name__}); retrain it.") from None
    return model.eval()

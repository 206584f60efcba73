"""Refit the cascade head on held-out interactions, with the trained LLM frozen (BDLM-drs).

Why this stage exists. BDLM pre-trains the domain model (its tables pre-load the LLM's tokens)
and then trains the cascade (eq. 6) on the same train interactions. On those rows ``f_DRS``
already separates the positive from the negative almost always (LightGCN ranks 98% of
(positive, negative) train pairs right on ML-100K), so the loss has nothing left for h_LLM to
explain and the head's weights on it stay near zero: BDLM-drs then ranks as the domain model
does. On interactions the domain model has *not* been trained on (the validation item of every
user: 81% of pairs right) the LLM feature does carry signal the domain model lacks.

So after joint training, with the LLM fixed (h_LLM computed once per prompt through
:class:`~lmrec.bdlm.features.FeatureCache`), the head is refit on the validation interaction
set (each user's validation item and its sampled negative, the interaction prompt built on the
history before it) by the cascade's own loss, binary cross-entropy (eq. 6), in the form

    logit = a * (head_f . f_DRS + b) + w_h . LN(h_LLM) + c

``a`` rescales the domain model's logit (LightGCN's dot products are over-confident on its own
train items), ``w_h`` and ``c`` are refit with an L2 penalty on ``w_h``. The penalty is chosen
from ``l2`` on a held-out fraction of the rows (the lowest held-out loss), then the head is fit
again on all rows with it, and written back into the one linear layer of eq. 5: the cascade
keeps the paper's form and is saved, loaded and scored as before.

``rows: lists`` refits on the validation *top-K lists* instead (each user's validation item and
its 19 sampled negatives), listwise (softmax cross-entropy over the 20 candidates, the task the
table measures), in the form

    logit = a * (head_f . f_DRS + b) + w_h . LN(h_LLM) + w_s * s_LLM

where ``s_LLM`` is the LLM's own score of the candidate (its item-token log-probability in the
user's top-K prompt; the cascade's ``use_llm_score`` column) and the h_LLM term is there when
the cascade reads h_LLM. The LLM's score varies across a user's candidates by construction,
which is what a feature needs to change a top-1; the penalty on ``w_h`` is chosen on held-out
users as above (``w_s`` and ``a`` are not penalised).

This is stacking on the validation set: the test items are never read. The interaction
threshold of BDLM-drs is then chosen on the same validation rows the head was fit on, which
favours that threshold a little; top-K metrics are not affected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from lmrec.bdlm.cascade import Cascade
from lmrec.bdlm.features import FeatureCache
from lmrec.bdlm.inference import CascadeScorer
from lmrec.errors import ConfigError, check_ints, check_numbers
from lmrec.llm.prompts import PromptBuilder, histories

REFIT_ROWS = ("none", "valid", "lists")


@dataclass
class RefitConfig:
    """The head refit of BDLM-drs.

    Attributes
    ----------
    rows:
        ``"none"`` keeps the head of the joint training; ``"valid"`` refits it on the
        validation interaction set; ``"lists"`` on the validation top-K lists, listwise
        (module docstring).
    l2:
        Candidate penalties on the LLM-feature weights, chosen on the held-out fraction.
    holdout:
        Fraction of the rows held out to choose the penalty.
    steps, lr:
        Full-batch Adam steps and learning rate of each fit.
    seed:
        Seeds the held-out draw.
    """

    rows: str = "none"
    l2: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1])
    holdout: float = 0.25
    steps: int = 300
    lr: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rows not in REFIT_ROWS:
            raise ConfigError(f"cascade_refit.rows must be one of {REFIT_ROWS}, got {self.rows!r}")
        check_ints("cascade_refit", self, {"steps": 1, "seed": 0})
        check_numbers("cascade_refit", self, ("lr",))
        if not self.l2 or any(
            isinstance(v, bool) or not isinstance(v, int | float) or v < 0 for v in self.l2
        ):
            raise ConfigError(
                f"cascade_refit.l2 must be a non-empty list of numbers >= 0, got {self.l2!r}"
            )
        if not 0 < self.holdout < 1:
            raise ConfigError(f"cascade_refit.holdout must be in (0, 1), got {self.holdout!r}")


def head_parts(
    cascade: Cascade, users: Tensor, items: Tensor, h: Tensor, tables=None
) -> tuple[Tensor, Tensor]:
    """(the head's logit from ``f_DRS`` alone, including the bias; the normalised h_LLM)."""
    if cascade.config.hidden or not cascade.h_dim:
        raise ConfigError(
            "cascade_refit needs the paper's linear head over [f_DRS ; h_LLM] "
            "(cascade.hidden 0, cascade.use_llm_feature true)"
        )
    f, h_n = cascade.inputs(users, items, h, tables)[:2]
    f_logit = f @ cascade.head.weight[0, : cascade.f_dim] + cascade.head.bias[0]
    return f_logit, h_n


def _fit(f_logit: Tensor, h: Tensor, labels: Tensor, w0: Tensor, l2: float, cfg: RefitConfig):
    a = torch.ones((), requires_grad=True)
    c = torch.zeros((), requires_grad=True)
    w = w0.clone().requires_grad_(True)

    def loss():
        bce = F.binary_cross_entropy_with_logits(a * f_logit + h @ w + c, labels)
        return bce + l2 * (w**2).sum()

    return _minimise([a, c, w], loss, cfg)


def _minimise(params: list[Tensor], loss, cfg: RefitConfig) -> tuple[Tensor, ...]:
    """Full-batch Adam on ``params`` for ``cfg.steps`` steps; the detached results."""
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for _ in range(cfg.steps):
        value = loss()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return tuple(p.detach() for p in params)


def _bce(params, f_logit: Tensor, h: Tensor, labels: Tensor) -> float:
    a, c, w = params
    return float(F.binary_cross_entropy_with_logits(a * f_logit + h @ w + c, labels))


def fit_head(
    cascade: Cascade, f_logit: Tensor, h: Tensor, labels: Tensor, cfg: RefitConfig
) -> dict:
    """Refit the head from precomputed parts (:func:`head_parts`) of (n, C) rows; in place.

    Returns the chosen penalty, the held-out loss of every candidate, and the loss on all rows
    before and after.
    """
    f_logit, h, labels = f_logit.detach().float(), h.detach().float(), labels.float()
    n = len(labels)
    if n < 2:
        raise ConfigError(f"cascade_refit needs at least 2 rows, got {n}")
    h_cols = slice(cascade.f_dim, cascade.f_dim + cascade.h_dim)
    w0 = cascade.head.weight.detach()[0, h_cols].float()
    before = _bce((torch.ones(()), torch.zeros(()), w0), f_logit, h, labels)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_out = max(1, int(round(n * cfg.holdout)))
    out, fit = perm[:n_out], perm[n_out:]
    held = {}
    for l2 in cfg.l2:
        params = _fit(f_logit[fit], h[fit], labels[fit], w0, float(l2), cfg)
        held[float(l2)] = _bce(params, f_logit[out], h[out], labels[out])
    best = min(held, key=held.get)
    a, c, w = _fit(f_logit, h, labels, w0, best, cfg)
    with torch.no_grad():
        weight = cascade.head.weight
        weight[0, : cascade.f_dim] *= a.to(weight)
        weight[0, h_cols] = w.to(weight)
        cascade.head.bias.mul_(a.to(weight)).add_(c.to(weight))
    return {
        "rows": n,
        "l2": best,
        "holdout_bce": held,
        "bce_before": before,
        "bce_after": _bce((a, c, w), f_logit, h, labels),
        "domain_scale": float(a),
        "llm_weight_norm": float(w.norm()),
    }


@torch.no_grad()
def _valid_parts(cascade, llm, tokenizer, builder, prepared, cache, batch_size, progress):
    sets = prepared.sets[("interaction", "valid")]
    hist = histories(prepared.split.history_before("valid"), prepared.split.n_users)
    scorer = CascadeScorer(cascade, llm, tokenizer, builder, hist, cache)  # BDLM-drs's inputs
    tables = cascade.tables()
    f_parts, h_parts = [], []
    for lo in tqdm(
        range(0, len(sets.users), batch_size), desc="cascade refit features", disable=not progress
    ):
        users, items = sets.users[lo : lo + batch_size], sets.items[lo : lo + batch_size]
        f_logit, h_n = head_parts(cascade, *scorer.tensors(users, items), tables)
        f_parts.append(f_logit.cpu())
        h_parts.append(h_n.cpu())
    return torch.cat(f_parts), torch.cat(h_parts), torch.as_tensor(sets.labels).float()


def refit_on_valid(
    cascade: Cascade,
    llm,
    tokenizer,
    builder: PromptBuilder,
    prepared,
    cache: FeatureCache,
    cfg: RefitConfig,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Refit ``cascade``'s head on the validation interaction set (module docstring)."""
    cascade.eval()
    llm.eval()
    f_logit, h, labels = _valid_parts(
        cascade, llm, tokenizer, builder, prepared, cache, batch_size, progress
    )
    return fit_head(cascade, f_logit, h, labels, cfg)


# ------------------------------------------------------------------ listwise, on top-K lists


def _fit_lists(f_logit: Tensor, s: Tensor, h: Tensor, l2: float, cfg: RefitConfig):
    """(a, w_s, w_h) minimising listwise cross-entropy (positive in column 0) + l2 |w_h|^2."""
    a = torch.ones((), requires_grad=True)
    w_s = torch.zeros((), requires_grad=True)
    w_h = torch.zeros(h.shape[-1], requires_grad=True)

    def loss():
        return _list_ce_tensor((a, w_s, w_h), f_logit, s, h) + l2 * (w_h**2).sum()

    return _minimise([a, w_s, w_h], loss, cfg)


def _list_ce_tensor(params, f_logit: Tensor, s: Tensor, h: Tensor) -> Tensor:
    a, w_s, w_h = params
    target = torch.zeros(len(f_logit), dtype=torch.long)
    return F.cross_entropy(a * f_logit + w_s * s + h @ w_h, target)


def _list_ce(params, f_logit: Tensor, s: Tensor, h: Tensor) -> float:
    return float(_list_ce_tensor(params, f_logit, s, h))


def fit_head_lists(
    cascade: Cascade, f_logit: Tensor, s: Tensor, h: Tensor, cfg: RefitConfig
) -> dict:
    """Refit the head listwise from (U, C) parts, positive in column 0; in place.

    ``f_logit`` is the head's logit from ``f_DRS`` alone, ``s`` the LLM's candidate scores,
    ``h`` (U, C, d_h) the normalised h_LLM (d_h = 0 when the cascade reads none). The penalty on
    ``w_h`` is chosen on held-out users when there is an h_LLM term.
    """
    if cascade.config.hidden or not cascade.s_dim:
        raise ConfigError(
            "cascade_refit.rows 'lists' fits the linear head's LLM-score column: it needs "
            "cascade.hidden 0 and cascade.use_llm_score true"
        )
    f_logit, s, h = f_logit.detach().float(), s.detach().float(), h.detach().float()
    n = len(f_logit)
    if n < 2:
        raise ConfigError(f"cascade_refit needs at least 2 lists, got {n}")
    # s is a log-probability: centre it per list (a shift per user changes no ranking)
    s = s - s.mean(1, keepdim=True)
    before = _list_ce((torch.ones(()), torch.zeros(()), torch.zeros(h.shape[-1])), f_logit, s, h)
    held: dict[float, float] = {}
    best = 0.0
    if h.shape[-1]:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
        n_out = max(1, int(round(n * cfg.holdout)))
        out, fit = perm[:n_out], perm[n_out:]
        for l2 in cfg.l2:
            params = _fit_lists(f_logit[fit], s[fit], h[fit], float(l2), cfg)
            held[float(l2)] = _list_ce(params, f_logit[out], s[out], h[out])
        best = min(held, key=held.get)
    a, w_s, w_h = _fit_lists(f_logit, s, h, best, cfg)
    with torch.no_grad():
        weight = cascade.head.weight
        weight[0, : cascade.f_dim] *= a.to(weight)
        weight[0, cascade.f_dim : cascade.f_dim + cascade.h_dim] = w_h.to(weight)
        weight[0, -1] = w_s.to(weight)
        cascade.head.bias.mul_(a.to(weight))
    return {
        "rows": n,
        "l2": best,
        "holdout_ce": held,
        "ce_before": before,
        "ce_after": _list_ce((a, w_s, w_h), f_logit, s, h),
        "domain_scale": float(a),
        "llm_score_weight": float(w_s),
        "llm_weight_norm": float(w_h.norm()),
    }


@torch.no_grad()
def refit_on_lists(
    cascade: Cascade,
    llm,
    tokenizer,
    builder: PromptBuilder,
    prepared,
    cache: FeatureCache,
    llm_scores,
    cfg: RefitConfig,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Refit ``cascade``'s head on the validation top-K lists (module docstring).

    ``llm_scores``: the LLM's scores of those lists (:class:`lmrec.bdlm.inference.ScoreTable`).
    """
    cascade.eval()
    llm.eval()
    lists = prepared.sets[("topk", "valid")]
    if llm_scores is not None:  # the lists the LLM scored (eval_limit may have cut them)
        lists = lists.head(len(llm_scores.users))
    hist = histories(prepared.split.history_before("valid"), prepared.split.n_users)
    scorer = CascadeScorer(cascade, llm, tokenizer, builder, hist, cache, llm_scores)
    tables = cascade.tables()
    f_parts, h_parts, s_parts = [], [], []
    for lo in tqdm(
        range(0, len(lists.users), batch_size), desc="cascade refit lists", disable=not progress
    ):
        users, items = lists.users[lo : lo + batch_size], lists.items[lo : lo + batch_size]
        u, it, h = scorer.tensors(users, items)
        parts = cascade.inputs(u, it, h, tables)
        f_parts.append((parts[0] @ cascade.head.weight[0, : cascade.f_dim]).cpu())
        h_parts.append(parts[1].cpu() if cascade.h_dim else torch.zeros(*it.shape, 0))
        s_parts.append(scorer.scores(users, items))
    with torch.enable_grad():
        return fit_head_lists(
            cascade, torch.cat(f_parts), torch.cat(s_parts), torch.cat(h_parts), cfg
        )


__all__ = [
    "RefitConfig",
    "fit_head",
    "fit_head_lists",
    "head_parts",
    "refit_on_lists",
    "refit_on_valid",
]

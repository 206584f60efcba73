"""The domain side with LLM knowledge (BDLM eqs. 5-6): y = sigmoid(head([f_DRS(u, i) ; h_LLM])).

``f_DRS`` is the domain model's own user-item feature, the input of its output layer:

=============  ==========================================================  ====================
model          f_DRS(u, i)                                                 head starts as
=============  ==========================================================  ====================
LightGCN, MF   ``p_u * q_i`` on the tables it scores with (propagated)     all-ones: <p_u, q_i>
GMF            ``p_u * q_i``                                               its ``predict`` layer
NeuMF          ``[p_u * q_i ; MLP([p'_u ; q'_i])]``, its penultimate layer  its ``predict`` layer
=============  ==========================================================  ====================

``h_LLM`` is the LLM's top-layer feature of the interaction prompt of (u, i) (see
:mod:`lmrec.bdlm.features`), layer-normalised without parameters (its raw scale depends on the
LLM and has a few outlier dimensions). The head is one linear layer, as in the paper
("we simply combine ... through concatenation"), or an MLP with ``hidden > 0``.

The head's weights on ``f_DRS`` start as the domain model's own output layer and those on
``h_LLM`` at zero, so before training the cascade ranks exactly as the domain model does and
training adds what the LLM feature explains. Loss: binary cross-entropy (eq. 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmrec.errors import ConfigError
from lmrec.models import GMF, MF, LightGCN, NeuMF
from lmrec.models.base import Recommender

SUPPORTED = "lightgcn, mf, gmf, neumf"


@dataclass
class CascadeConfig:
    """How the domain side reads the LLM feature.

    Attributes
    ----------
    use_llm_feature:
        Concatenate h_LLM (eq. 5); False leaves the domain model's own feature only.
    hidden:
        0: the head is one linear layer over the concatenation (the paper). > 0: a two-layer
        MLP with this hidden width, initialised at random (``init_from_domain`` then does not
        apply).
    feature_norm:
        Layer-normalise h_LLM (no learned scale or shift) before the head.
    init_from_domain:
        Start the head as the domain model's output layer (zero weight on h_LLM); False starts
        it at PyTorch's default initialisation.
    use_llm_score:
        One more input column: the LLM's own score of the candidate (its item-token
        log-probability in the user's top-K prompt). Its weight starts at 0 and is fitted by
        the refit on validation lists (:mod:`lmrec.bdlm.refit`); pairs without a top-K list
        (interaction prediction, joint training) read 0 there.
    """

    use_llm_feature: bool = True
    use_llm_score: bool = False
    hidden: int = 0
    feature_norm: bool = True
    init_from_domain: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 0:
            raise ConfigError(f"cascade.hidden must be an integer >= 0, got {self.hidden!r}")


def domain_feature_dim(model: Recommender) -> int:
    """Width of ``f_DRS`` for ``model`` (raises for models BDLM cannot pair with)."""
    if isinstance(model, NeuMF):
        return model.config.dim + model.config.mlp_hidden[-1]
    if isinstance(model, LightGCN | MF | GMF):
        return model.config.dim
    raise ConfigError(
        f"BDLM needs a domain model with user and item tables ({SUPPORTED}), got "
        f"{type(model).__name__}"
    )


def domain_features(
    model: Recommender, users: Tensor, items: Tensor, tables: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """``f_DRS(u, i)`` for broadcastable index tensors, e.g. (B, 1) and (B, C) -> (B, C, d_f).

    ``tables`` are ``model.user_item_embeddings()`` when the caller has them already (LightGCN
    propagates over the whole graph to get them).
    """
    if isinstance(model, NeuMF):
        gmf = model.user_gmf(users) * model.item_gmf(items)
        hidden = model.mlp_user_in(model.drop(model.user_mlp(users))) + model.mlp_item_in(
            model.drop(model.item_mlp(items))
        )
        return torch.cat([gmf, model.mlp_rest(hidden)], -1)
    if isinstance(model, GMF):
        return model.user_emb(users) * model.item_emb(items)
    domain_feature_dim(model)  # raises for unsupported models
    user_table, item_table = tables if tables is not None else model.user_item_embeddings()
    return user_table[users] * item_table[items]


def _domain_head(model: Recommender) -> tuple[Tensor, Tensor]:
    """(weight (d_f,), bias ()) of the domain model's own output layer on ``f_DRS``."""
    if isinstance(model, NeuMF | GMF):
        return model.predict.weight.detach()[0].clone(), model.predict.bias.detach()[0].clone()
    dim = domain_feature_dim(model)
    return torch.ones(dim), torch.zeros(())


class Cascade(nn.Module):
    """The domain model plus the head over ``[f_DRS ; h_LLM]``.

    Parameters
    ----------
    domain:
        A LightGCN, MF, GMF or NeuMF (already trained: BDLM pre-loads the LLM from it).
    feature_dim:
        Width of h_LLM (the LLM's hidden size); ignored when ``config.use_llm_feature`` is off.
    """

    def __init__(
        self, domain: Recommender, feature_dim: int, config: CascadeConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config or CascadeConfig()
        self.domain = domain
        self.f_dim = domain_feature_dim(domain)
        self.h_dim = feature_dim if self.config.use_llm_feature else 0
        self.s_dim = 1 if self.config.use_llm_score else 0
        width = self.f_dim + self.h_dim + self.s_dim
        if self.config.hidden:
            self.head = nn.Sequential(
                nn.Linear(width, self.config.hidden), nn.ReLU(), nn.Linear(self.config.hidden, 1)
            )
        else:
            self.head = nn.Linear(width, 1)
            if self.config.init_from_domain:
                weight, bias = _domain_head(domain)
                with torch.no_grad():
                    self.head.weight.zero_()
                    self.head.weight[0, : self.f_dim] = weight.to(self.head.weight)
                    self.head.bias.fill_(float(bias))

    def tables(self) -> tuple[Tensor | None, Tensor]:
        """The domain model's (P_U, Q_I), differentiable in train mode."""
        return self.domain.user_item_embeddings()

    def forward(
        self,
        users: Tensor,
        items: Tensor,
        h: Tensor | None = None,
        tables: tuple[Tensor, Tensor] | None = None,
        s: Tensor | None = None,
    ) -> Tensor:
        """Logits for broadcastable ``users`` / ``items`` (e.g. (B, 1), (B, C)) -> (B, C).

        ``h`` is h_LLM with the broadcast shape plus the feature width, e.g. (B, C, d_h); ``s``
        the LLM's candidate scores (B, C) when the head reads them (None reads 0).
        """
        return self.head(torch.cat(self.inputs(users, items, h, tables, s), -1)).squeeze(-1)

    def inputs(
        self,
        users: Tensor,
        items: Tensor,
        h: Tensor | None = None,
        tables: tuple[Tensor, Tensor] | None = None,
        s: Tensor | None = None,
    ) -> list[Tensor]:
        """The head's inputs: ``[f_DRS]``, plus h_LLM (normalised, broadcast) and the LLM's
        candidate score when it reads them."""
        f = domain_features(self.domain, users, items, tables)  # (..., d_f)
        parts = [f]
        if self.h_dim:
            if h is None:
                raise ValueError("this cascade reads h_LLM: pass the prompt features h")
            h = h.to(f)
            if self.config.feature_norm:
                h = F.layer_norm(h, (h.shape[-1],))
            parts.append(h.expand(*f.shape[:-1], h.shape[-1]))
        if self.s_dim:
            col = torch.zeros(f.shape[:-1], dtype=f.dtype, device=f.device)
            if s is not None:
                col = col + s.to(f)
            parts.append(col.unsqueeze(-1))
        return parts

    def loss(
        self,
        users: Tensor,
        items: Tensor,
        labels: Tensor,
        h: Tensor | None = None,
        tables: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Binary cross-entropy of the cascade's prediction (eq. 6)."""
        logits = self.forward(users, items, h, tables)
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits))

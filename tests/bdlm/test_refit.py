"""The cascade head refit on held-out interactions (lmrec.bdlm.refit)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmrec.bdlm.cascade import Cascade, CascadeConfig
from lmrec.bdlm.config import BDLMConfig
from lmrec.bdlm.refit import RefitConfig, fit_head, head_parts, refit_on_valid
from lmrec.config import from_dict
from lmrec.errors import ConfigError
from lmrec.models import LightGCN, LightGCNConfig
from lmrec.protocol.candidates import CandidateSet

H_DIM = 6


def _cascade(n_users=40, n_items=30, dim=8, **cfg) -> Cascade:
    torch.manual_seed(0)
    domain = LightGCN(n_users, n_items, LightGCNConfig(dim=dim, n_layers=1))
    rng = np.random.default_rng(0)
    domain.set_graph(rng.integers(0, n_users, 200), rng.integers(0, n_items, 200))
    domain.eval()
    return Cascade(domain, H_DIM, CascadeConfig(**cfg))


def _rows(n=200, seed=0):
    """n users x (positive, negative); the label is read off one direction of h_LLM only."""
    g = torch.Generator().manual_seed(seed)
    users = torch.arange(n).remainder(40).unsqueeze(1)
    items = torch.randint(0, 30, (n, 2), generator=g)
    h = torch.randn(n, 2, H_DIM, generator=g)
    h[:, 0, 0] += 3.0  # positives stand out along h's first coordinate
    labels = torch.tensor([[1.0, 0.0]]).expand(n, 2)
    return users, items, h, labels


def test_fit_head_learns_what_the_domain_model_misses_and_writes_the_linear_head():
    cascade = _cascade()
    users, items, h, labels = _rows()
    with torch.no_grad():
        before = cascade(users, items, h)
        f_logit, h_n = head_parts(cascade, users, items, h)
    # the head starts as the domain model: zero weight on h_LLM
    assert torch.allclose(before, f_logit, atol=1e-5)
    stats = fit_head(cascade, f_logit, h_n, labels, RefitConfig(l2=[0.0, 1e-2], steps=200))
    with torch.no_grad():
        after = cascade(users, items, h)
    acc_before = float((before[:, 0] > before[:, 1]).float().mean())
    acc_after = float((after[:, 0] > after[:, 1]).float().mean())
    assert acc_after > 0.95 > acc_before + 0.2
    assert stats["bce_after"] < stats["bce_before"]
    # the cascade's own forward gives the loss the fit reports: the head was written back whole
    assert F.binary_cross_entropy_with_logits(after, labels).item() == pytest.approx(
        stats["bce_after"], rel=1e-4
    )
    assert cascade.head.weight[0, cascade.f_dim].item() > 0.5  # h's informative coordinate
    assert set(stats["holdout_bce"]) == {0.0, 1e-2} and stats["l2"] in (0.0, 1e-2)


def test_a_large_penalty_keeps_the_llm_weights_small_and_is_not_chosen():
    users, items, h, labels = _rows()
    small, large = _cascade(), _cascade()
    with torch.no_grad():
        parts = head_parts(small, users, items, h)
    fit_head(large, *parts, labels, RefitConfig(l2=[10.0], steps=200))
    chosen = fit_head(small, *parts, labels, RefitConfig(l2=[1e-3, 10.0], steps=200))
    assert large.head.weight[0, large.f_dim :].norm() < 0.2
    assert chosen["l2"] == 1e-3
    assert chosen["holdout_bce"][1e-3] < chosen["holdout_bce"][10.0]


def test_refit_on_valid_reads_the_validation_interactions(make_sides, split):
    sides = make_sides(split)
    valid = CandidateSet(
        "interaction",
        "valid",
        np.array([0, 1]),
        np.array([[4, 9], [7, 3]]),
        np.array([[1, 0], [1, 0]], dtype=np.int8),
    )
    prepared = SimpleNamespace(split=split, sets={("interaction", "valid"): valid})
    before = sides.cascade.head.weight.detach().clone()
    stats = refit_on_valid(
        sides.cascade,
        sides.llm,
        sides.tokenizer,
        sides.builder,
        prepared,
        sides.features,
        RefitConfig(l2=[0.0, 1.0], holdout=0.5, steps=20),
        progress=False,
    )
    assert stats["rows"] == 2
    assert len(sides.features) == 4  # one h_LLM per (user, candidate) prompt, cached
    assert not torch.equal(sides.cascade.head.weight, before)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cascade_refit": {"rows": "test"}}, "cascade_refit.rows must be one of"),
        ({"cascade_refit": {"holdout": 1.0}}, "holdout"),
        ({"cascade_refit": {"l2": []}}, "l2"),
        ({"cascade_refit": {"l2": [-1.0]}}, "l2"),
        ({"cascade_refit": {"rows": "valid"}, "cascade": {"hidden": 4}}, "linear head"),
        ({"cascade_refit": {"rows": "valid"}, "cascade": {"use_llm_feature": False}}, "linear"),
        ({"cascade_refit": {"row": "valid"}}, "unknown key"),
    ],
)
def test_refit_config_errors_name_the_field(config, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(BDLMConfig, config, "bdlm")


def test_head_parts_refuses_a_cascade_without_the_llm_feature():
    cascade = _cascade(use_llm_feature=False)
    users, items, h, _ = _rows(4)
    with pytest.raises(ConfigError, match="linear head"):
        head_parts(cascade, users, items, h)

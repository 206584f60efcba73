"""The cascade (eqs. 5-6): shapes, BCE, and a head that starts as the domain model's own output."""

import pytest
import torch
import torch.nn.functional as F

from lmrec.bdlm.cascade import Cascade, CascadeConfig, domain_feature_dim, domain_features
from lmrec.errors import ConfigError
from lmrec.models import build_model

USERS = torch.tensor([[0], [2], [3]])  # (B, 1)
ITEMS = torch.tensor([[1, 4, 5], [0, 2, 9], [7, 7, 3]])  # (B, C)


def _domain(name, **config):
    torch.manual_seed(0)
    model = build_model(name, 4, 10, {"dim": 8, **config})
    model.prepare([0, 1, 2, 3, 3], [1, 2, 3, 4, 9])
    return model.eval()


@pytest.mark.parametrize("name", ["lightgcn", "mf", "gmf", "neumf"])
def test_shapes_and_the_head_starts_as_the_domain_model(name):
    domain = _domain(name)
    cascade = Cascade(domain, feature_dim=6).eval()
    h = torch.randn(3, 3, 6)
    logits = cascade(USERS, ITEMS, h)
    assert logits.shape == (3, 3)
    f = domain_features(domain, USERS, ITEMS)
    assert f.shape == (3, 3, domain_feature_dim(domain))
    with torch.no_grad():  # zero weight on h_LLM: the domain model's own scores
        assert torch.allclose(logits, domain.score(USERS.squeeze(1), ITEMS), atol=1e-5)


def test_bce_is_the_binary_cross_entropy_of_the_logits():
    cascade = Cascade(_domain("lightgcn"), feature_dim=6)
    with torch.no_grad():
        cascade.head.weight.normal_()  # make h_LLM matter
    h = torch.randn(3, 3, 6)
    labels = torch.tensor([[1.0, 0.0, 0.0]] * 3)
    p = torch.sigmoid(cascade(USERS, ITEMS, h))
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    assert cascade.loss(USERS, ITEMS, labels, h).item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_llm_feature_changes_scores_once_the_head_reads_it():
    cascade = Cascade(_domain("gmf"), feature_dim=6)
    h = torch.randn(3, 3, 6)
    base = cascade(USERS, ITEMS, h).detach()
    labels = torch.tensor([[1.0, 0.0, 0.0]] * 3)
    opt = torch.optim.SGD(cascade.head.parameters(), lr=1.0)
    cascade.loss(USERS, ITEMS, labels, h).backward()
    opt.step()
    assert cascade.head.weight[0, 8:].abs().sum() > 0  # the h_LLM part learned something
    assert not torch.allclose(cascade(USERS, ITEMS, h), base)


def test_feature_normalisation_and_no_feature():
    cascade = Cascade(_domain("mf"), 6, CascadeConfig(use_llm_feature=False))
    assert cascade.h_dim == 0 and cascade.head.in_features == 8
    assert cascade(USERS, ITEMS).shape == (3, 3)
    normed = Cascade(_domain("mf"), 6)
    with torch.no_grad():
        normed.head.weight.normal_()
    h = torch.randn(3, 3, 6)
    # layer norm: shifting and scaling h changes nothing
    assert torch.allclose(normed(USERS, ITEMS, h), normed(USERS, ITEMS, 3 * h + 1), atol=1e-4)
    mlp = Cascade(_domain("mf"), 6, CascadeConfig(hidden=5))
    assert mlp(USERS, ITEMS, h).shape == (3, 3)


def test_unsupported_domain_model_and_missing_feature():
    sasrec = build_model("sasrec", 4, 10, {"dim": 8})
    with pytest.raises(ConfigError, match="lightgcn, mf, gmf, neumf"):
        Cascade(sasrec, 6)
    with pytest.raises(ValueError, match="h_LLM"):
        Cascade(_domain("mf"), 6)(USERS, ITEMS)
    with pytest.raises(ConfigError, match="cascade.hidden"):
        CascadeConfig(hidden=-1)


def test_bce_matches_torch_on_pairs():
    cascade = Cascade(_domain("neumf"), 6)
    h = torch.randn(2, 2, 6)
    users, items = torch.tensor([[0], [1]]), torch.tensor([[1, 2], [3, 4]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    cascade.eval()
    expected = F.binary_cross_entropy_with_logits(cascade(users, items, h), labels)
    assert torch.equal(cascade.loss(users, items, labels, h), expected)

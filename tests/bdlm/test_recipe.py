"""The BDLM recipe's parts: test-shaped rows, protocol negatives, listwise loss, projection, and
the listwise head refit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmrec.bdlm.aligned import AlignedBatches
from lmrec.bdlm.cascade import Cascade, CascadeConfig
from lmrec.bdlm.refit import RefitConfig, fit_head_lists
from lmrec.bdlm.sharing import SharingModule
from lmrec.llm.finetune import listwise_loss
from lmrec.llm.sft import ExampleConfig
from lmrec.llm.tokens import orthogonal_projection
from lmrec.models import LightGCN, LightGCNConfig
from lmrec.protocol.samplers import PopularitySampler, SamplingContext, SeenItems

TRAIN = {0: [0, 1, 2, 3], 1: [4, 5, 6], 2: [1, 7, 8], 3: [2, 9, 0]}  # conftest's tiny_split


def test_recent_rows_cover_every_user_with_the_most_recent_targets(split):
    batches = AlignedBatches(split, batch_size=3, seed=0, rows="recent")
    assert batches.n_batches() == 2  # 4 users, 3 rows a step
    for epoch, back in ((1, 1), (2, 2), (3, 1)):  # epoch 3 cycles (3-item users have 2 targets)
        rows = [batches.batch(epoch, k) for k in range(2)]
        users = np.concatenate([r.users for r in rows])
        assert sorted(users.tolist()) == [0, 1, 2, 3]
        for r in rows:
            for u, pos, neg, t in zip(r.users, r.pos, r.neg, r.position, strict=True):
                seq = TRAIN[int(u)]
                b = back if epoch < 3 or len(seq) == 3 else 3
                assert pos == seq[-b] and t == len(seq) - b
                assert batches.history(int(u), int(t)).tolist() == seq[: len(seq) - b]
                assert neg not in seq
    # shuffled per epoch, reproducible from the seed
    again = AlignedBatches(split, batch_size=3, seed=0, rows="recent")
    assert again.batch(1, 0).users.tolist() == batches.batch(1, 0).users.tolist()


def test_protocol_negatives_never_hit_the_target_or_any_held_out_item(split):
    frames = [split.train, split.valid, split.test]
    seen = SeenItems.from_pairs(
        np.concatenate([f["user"].to_numpy() for f in frames]),
        np.concatenate([f["item"].to_numpy() for f in frames]),
        split.n_users,
        split.n_items,
    )
    popularity = np.bincount(split.train["item"].to_numpy(), minlength=10).astype(float) + 1
    sampler = PopularitySampler(SamplingContext(seen, popularity))
    batches = AlignedBatches(split, batch_size=4, seed=0, rows="recent", negatives=sampler)
    examples = ExampleConfig(n_candidates=4, tasks=["topk"])
    held = {0: {4, 5}, 1: {7, 8}}  # the valid/test items of tiny_split
    for epoch in (1, 2):
        rows = batches.batch(epoch, 0)
        cands = batches.topk_candidates(rows, examples, epoch, 0)
        assert (cands[:, 0] == rows.pos).all()
        for u, row in zip(rows.users, cands, strict=True):
            negs = set(row[1:].tolist())
            assert len(negs) == 3 and not negs & set(TRAIN[int(u)])
            assert not negs & held.get(int(u), set())


def test_listwise_loss_reads_the_position_before_the_answer():
    vocab, ignore = 10, -100
    logits = torch.zeros(2, 4, vocab)
    labels = torch.full((2, 4), ignore)
    labels[0, 2:] = torch.tensor([7, 1])  # answer token 7 at column 2: predicted at column 1
    labels[1, 3:] = torch.tensor([5])
    logits[0, 1, 7] = 2.0  # the target's logit, among candidates 7, 8, 9
    logits[1, 2, 6] = 3.0  # row 1: a negative wins
    cands = torch.tensor([[7, 8, 9], [5, 6, 4]])
    loss = listwise_loss(logits, labels, torch.tensor([0, 1]), cands)
    p0 = np.exp(2) / (np.exp(2) + 2)
    p1 = 1 / (np.exp(3) + 2)
    assert float(loss) == pytest.approx(-(np.log(p0) + np.log(p1)) / 2, rel=1e-5)
    # only the listed rows count
    assert float(listwise_loss(logits, labels, torch.tensor([0]), cands[:1])) == pytest.approx(
        -np.log(p0), rel=1e-5
    )


def test_projection_lets_a_narrow_domain_model_share_m_with_a_wide_llm():
    torch.manual_seed(0)
    p_u, q_i = torch.randn(4, 8), torch.randn(6, 8)
    proj = orthogonal_projection(8, 48)
    assert torch.allclose(proj @ proj.T, torch.eye(8), atol=1e-5)
    scale = 2.0
    e_u, e_i = p_u @ proj / scale, q_i @ proj / scale  # pre-loaded LLM rows, 48 wide
    m = SharingModule.from_tables(p_u, q_i, scale, llm_projection=proj)
    users, items = torch.arange(4), torch.arange(6)
    assert m.distance("llm", users, items, e_u, e_i) < 1e-10
    assert m.distance("drs", users, items, p_u, q_i) < 1e-10
    # a move of the LLM rows outside the shared 8-dim subspace costs nothing ...
    outside = torch.randn(4, 48)
    outside -= outside @ proj.T @ proj
    assert m.distance("llm", users, items, e_u + outside, e_i) < 1e-8
    # ... one inside it does, and what the LLM writes is its rows mapped back to the domain width
    m.write("llm", users, items, e_u * 1.5, e_i)
    assert torch.allclose(m.users, 1.5 * p_u, atol=1e-5)


def test_listwise_refit_uses_the_llm_score_where_the_domain_model_fails(tmp_path):
    torch.manual_seed(0)
    domain = LightGCN(4, 6, LightGCNConfig(dim=8, n_layers=1))
    cascade = Cascade(domain, 16, CascadeConfig(use_llm_feature=False, use_llm_score=True))
    n, c = 400, 5
    gen = torch.Generator().manual_seed(1)
    f_logit = torch.randn(n, c, generator=gen)
    f_logit[: n // 2, 0] += 3.0  # the domain model gets half of the lists right ...
    s = torch.randn(n, c, generator=gen)
    s[n // 2 :, 0] += 3.0  # ... the LLM the other half
    h = torch.zeros(n, c, 0)
    out = fit_head_lists(cascade, f_logit, s, h, RefitConfig(rows="lists", steps=300, lr=0.05))
    assert out["llm_score_weight"] > 0.5 and out["domain_scale"] > 0.5
    assert out["ce_after"] < out["ce_before"] - 0.2
    # written into the head: its last column is the LLM score's weight
    assert float(cascade.head.weight[0, -1]) == pytest.approx(out["llm_score_weight"])
    fused = out["domain_scale"] * f_logit + out["llm_score_weight"] * s
    top1 = (fused.argmax(1) == 0).float().mean()
    assert top1 > max((f_logit.argmax(1) == 0).float().mean(), (s.argmax(1) == 0).float().mean())


def test_a_fitted_linear_map_with_bias_round_trips_through_m(tmp_path):
    torch.manual_seed(0)
    p_u, q_i = torch.randn(4, 8), torch.randn(6, 8)
    w, b = torch.randn(8, 48), torch.randn(48)
    e_u, e_i = p_u @ w + b, q_i @ w + b  # the LLM's pre-loaded rows (scale 1)
    m = SharingModule.from_tables(p_u, q_i, 1.0, llm_projection=w, llm_offset=b)
    users, items = torch.arange(4), torch.arange(6)
    assert m.distance("llm", users, items, e_u, e_i) < 1e-8
    m.save(tmp_path / "m.safetensors")
    again = SharingModule.load(tmp_path / "m.safetensors")
    assert again.distance("llm", users, items, e_u, e_i) < 1e-8
    m.write("llm", users, items, e_u + 0.5 * (e_u - b), e_i)  # 1.5 x the domain rows, mapped back
    assert torch.allclose(m.users, 1.5 * p_u, atol=1e-4)

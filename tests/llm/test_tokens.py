import numpy as np
import pytest
import torch

from lmrec.errors import ConfigError
from lmrec.llm.modes import ModeConfig, apply_mode
from lmrec.llm.tokens import (
    IdTokens,
    add_id_tokens,
    id_token_rows,
    preload_id_tokens,
)


def test_tokens_are_added_and_mapped_both_ways(tiny, tmp_path):
    model, tok = tiny
    vocab = len(tok)
    ids = add_id_tokens(model, tok, n_users=3, n_items=5)
    assert ids.first_id == vocab and ids.end_id == vocab + 8 == len(tok)
    assert model.get_input_embeddings().weight.shape[0] == vocab + 8
    # text -> id -> (kind, index) -> token text
    enc = tok("User <u_2> has watched <i_4>", add_special_tokens=False)["input_ids"]
    assert ids.token_ids("user", 2) in enc and ids.token_ids("item", 4) in enc
    assert ids.lookup(ids.token_ids("user", 2)) == ("user", 2)
    assert ids.lookup(vocab + 3 + 4) == ("item", 4)
    assert tok.convert_ids_to_tokens(ids.token_ids("item", 4)) == "<i_4>" == ids.item_token(4)
    np.testing.assert_array_equal(ids.token_ids("item", np.array([0, 4])), [vocab + 3, vocab + 7])
    assert torch.equal(ids.token_ids("user", torch.tensor([1])), torch.tensor([vocab + 1]))
    with pytest.raises(KeyError):
        ids.lookup(5)
    with pytest.raises(IndexError):
        ids.token_ids("item", 5)
    ids.save(tmp_path / "ids.json")
    assert IdTokens.load(tmp_path / "ids.json") == ids


def test_random_rows_have_the_vocabulary_norm_and_are_seeded(tiny):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 4, 6, seed=3)
    w = model.get_input_embeddings().weight.detach()
    vocab_norm = w[: ids.first_id].norm(dim=1).mean()
    new = w[ids.first_id :]
    assert torch.allclose(new.norm(dim=1), vocab_norm.expand(10), rtol=1e-4)
    from lmrec.llm.resolve import load_llm

    m2, t2 = load_llm("tiny-llama", device="cpu")
    ids2 = add_id_tokens(m2, t2, 4, 6, seed=3)
    assert ids2 == ids
    assert torch.equal(m2.get_input_embeddings().weight[ids.first_id :], new)


def test_preloaded_rows_equal_the_domain_tables_at_equal_width(tiny):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 3, 5)
    users, items = torch.randn(3, 48), torch.randn(5, 48)
    record = preload_id_tokens(model, tok, ids, users, items).record
    w = model.get_input_embeddings().weight
    assert record["projection"] == "copy"
    assert torch.equal(w[ids.first_id : ids.first_item_id], users)
    assert torch.equal(w[ids.first_item_id : ids.end_id], items)
    # what a forward pass reads at a token position is that row
    assert torch.equal(id_token_rows(model, ids, "item", torch.tensor([2])), items[2:3])


def test_orthogonal_projection_keeps_inner_products_and_takes_the_lm_norm(tiny):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 3, 5)
    users, items = torch.randn(3, 16), torch.randn(5, 16)
    done = preload_id_tokens(model, tok, ids, users, items, projection="auto")
    record = done.record
    assert record["projection"] == "orthogonal"
    rows = model.get_input_embeddings().weight.detach()[ids.first_id : ids.end_id]
    both = torch.cat([users, items])
    scale = rows.norm(dim=1).mean() / (both.norm(dim=1).mean())
    # an isometry up to one scale: every user.item (and item.item) inner product survives
    assert torch.allclose(rows @ rows.T, scale**2 * both @ both.T, atol=1e-4)
    assert rows.norm(dim=1).mean() == pytest.approx(record["lm_embedding_norm"], rel=1e-5)
    # the rows are the tables times the one fixed matrix it returns, over its scale
    assert torch.allclose(both @ done.projection / done.scale, rows, atol=1e-6)
    assert done.projection.shape == (16, 48) and done.offset is None


def test_linear_projection_is_fitted_to_title_embeddings(tiny):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 2, 3)
    items = torch.eye(3, 8)  # 3 items, width 8: a linear map can hit any 3 targets exactly
    preload_id_tokens(model, tok, ids, None, items, projection="linear", titles=["the", "a", "of"])
    w = model.get_input_embeddings().weight.detach()
    the = w[tok("the", add_special_tokens=False)["input_ids"]].mean(0)
    assert torch.allclose(w[ids.token_ids("item", 0)], the, atol=1e-2)
    with pytest.raises(ConfigError, match="copy needs equal widths"):
        preload_id_tokens(model, tok, ids, None, items, projection="copy")


def test_rows_read_through_peft_follow_the_trainable_copy(tiny):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 2, 3)
    peft_model = apply_mode(model, ModeConfig(mode="extra"), ids, tok)
    delta = next(p for n, p in peft_model.named_parameters() if "trainable_tokens_delta" in n)
    with torch.no_grad():
        delta[ids.n_users + 1] = 7.0
    rows = id_token_rows(peft_model, ids, "item", torch.tensor([1]))
    assert torch.equal(rows, torch.full((1, 48), 7.0))


def test_bdlm_scales_copied_rows_to_the_lm_norm_and_can_compute_the_map_without_writing(tiny):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 3, 5)
    before = model.get_input_embeddings().weight.detach().clone()
    users, items = 10 * torch.randn(3, 48), 10 * torch.randn(5, 48)
    done = preload_id_tokens(model, tok, ids, users, items, scale_copy=True, write=False)
    assert torch.equal(model.get_input_embeddings().weight, before)  # rows left as they were
    both_norm = torch.cat([users, items]).norm(dim=1).mean()
    assert done.scale == pytest.approx(float(both_norm) / done.record["lm_embedding_norm"])
    preload_id_tokens(model, tok, ids, users, items, scale_copy=True)
    rows = model.get_input_embeddings().weight.detach()[ids.first_id : ids.end_id]
    assert torch.allclose(rows, torch.cat([users, items]) / done.scale, atol=1e-5)

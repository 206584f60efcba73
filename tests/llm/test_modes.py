import pytest
import torch

from lmrec.errors import ConfigError
from lmrec.llm.finetune import FinetuneConfig, train_sft
from lmrec.llm.modes import ModeConfig, apply_mode, param_groups, prompt_embedding
from lmrec.llm.prompts import Prompt
from lmrec.llm.tokens import add_id_tokens

EXAMPLES = [
    Prompt("User <u_0> has watched <i_1>. Candidates: <i_0>, <i_2>. Answer:", "<i_2>"),
    Prompt("User <u_1> has watched <i_2>. Predict if he will watch <i_0>. Answer:", " Yes"),
    Prompt("User <u_1> has watched <i_0>. Candidates: <i_1>, <i_2>. Answer:", "<i_1>"),
]
FAST = FinetuneConfig(batch_size=2, max_steps=3, lr=1e-2, lr_tokens=1e-1, warmup_steps=1)


def _prepared(tiny, mode):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 2, 3)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    return apply_mode(model, ModeConfig(mode=mode), ids, tok), tok, ids, base


def _base_params(model):
    """Parameters of the wrapped base model under their original names."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return dict(inner.named_parameters())


def test_lora_leaves_base_weights_unchanged_but_moves_adapters_and_token_rows(tiny):
    model, tok, ids, base = _prepared(tiny, "lora")
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    rows_before = model.get_input_embeddings()(torch.arange(ids.first_id, ids.end_id)).detach()
    train_sft(model, tok, EXAMPLES, FAST, progress=False)
    for name, p in _base_params(model).items():
        orig = name.replace(".base_layer", "")
        if orig in base:
            assert torch.equal(p, base[orig]), name
    assert any(
        not torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if n in lora_before
    )
    rows_after = model.get_input_embeddings()(torch.arange(ids.first_id, ids.end_id)).detach()
    assert not torch.equal(rows_after, rows_before)


def test_soft_prompt_tuning_changes_only_the_prompt(tiny):
    model, tok, ids, base = _prepared(tiny, "prompt")
    before = prompt_embedding(model).weight.detach().clone()
    train_sft(model, tok, EXAMPLES, FAST, progress=False)
    assert not torch.equal(prompt_embedding(model).weight, before)
    for name, p in model.get_base_model().named_parameters():
        assert torch.equal(p, base[name]), name
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "prompt_encoder.default.embedding.weight"
    ]


def test_extra_part_trains_only_the_new_rows(tiny):
    model, tok, ids, base = _prepared(tiny, "extra")
    rows_before = model.get_input_embeddings()(torch.arange(ids.first_id, ids.end_id)).detach()
    vocab_before = model.get_input_embeddings()(torch.arange(ids.first_id)).detach()
    train_sft(model, tok, EXAMPLES, FAST, progress=False)
    emb = model.get_input_embeddings()
    assert not torch.equal(emb(torch.arange(ids.first_id, ids.end_id)).detach(), rows_before)
    assert torch.equal(emb(torch.arange(ids.first_id)).detach(), vocab_before)
    for name, p in model.get_base_model().named_parameters():
        if "embed" not in name:
            assert torch.equal(p, base[name.replace(".base_layer", "")]), name


def test_full_mode_trains_everything_with_a_higher_lr_for_the_rows(tiny):
    model, tok, ids, base = _prepared(tiny, "full")
    groups = {g["name"]: g for g in param_groups(model, 1e-4, 1e-3)}
    assert groups["tokens"]["lr"] == 1e-3 and groups["model"]["lr"] == 1e-4
    assert sum(p.numel() for p in groups["tokens"]["params"]) == (ids.end_id - ids.first_id) * 48
    layer = model.get_base_model().model.layers[0].mlp.up_proj.weight
    train_sft(model, tok, EXAMPLES, FAST, progress=False)
    assert not torch.equal(layer, base["model.layers.0.mlp.up_proj.weight"])


def test_the_tied_head_reads_the_trainable_rows(tiny):
    """Item-token logits must move with the trained rows (the head is the same table)."""
    model, tok, ids, _ = _prepared(tiny, "lora")
    x = tok(["User has watched"], return_tensors="pt")
    with torch.no_grad():
        out = model(**x, output_hidden_states=True)
        delta = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)
        delta[ids.n_users + 2] += 1.0
        after = model(**x).logits[0, -1, ids.token_ids("item", 2)]
    h = out.hidden_states[-1][0, -1]
    assert torch.allclose(after - out.logits[0, -1, ids.token_ids("item", 2)], h.sum(), atol=1e-4)


def test_modes_that_need_tokens_or_training_say_so(tiny):
    model, tok = tiny
    with pytest.raises(ConfigError, match="needs id tokens"):
        apply_mode(model, ModeConfig(mode="extra"), None, tok)
    with pytest.raises(ConfigError, match="mode must be one of"):
        ModeConfig(mode="qlora")
    frozen = apply_mode(model, ModeConfig(mode="none"), None, tok)
    with pytest.raises(ConfigError, match="nothing to train"):
        train_sft(frozen, tok, EXAMPLES[1:2], FAST, progress=False)


@pytest.mark.parametrize("mode", ["lora", "full", "extra"])
def test_merging_after_training_scores_as_the_adapters_did(tiny, mode):
    from lmrec.llm.modes import merged_for_scoring
    from lmrec.llm.scoring import score_token_candidates

    model, tok, ids, _ = _prepared(tiny, mode)
    train_sft(model, tok, EXAMPLES, FAST, progress=False)
    model.eval()
    prompts = [e.text for e in EXAMPLES]
    cands = ids.token_ids("item", torch.tensor([[0, 1, 2]] * len(prompts)))
    rows = model.get_input_embeddings()(torch.arange(ids.first_id, ids.end_id)).detach()
    before = score_token_candidates(model, tok, prompts, cands)
    merged = merged_for_scoring(model)
    assert type(merged).__name__ == "LlamaForCausalLM"  # no peft layer left
    assert not any(p.requires_grad for p in merged.parameters())
    after = score_token_candidates(merged, tok, prompts, cands)
    # the trained rows are copied exactly; LoRA's product is added to its weight once
    assert torch.equal(merged.get_input_embeddings().weight[ids.first_id : ids.end_id], rows)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)


def test_models_without_adapters_to_merge_are_scored_as_they_are(tiny):
    from lmrec.llm.modes import merged_for_scoring

    model, tok, ids, _ = _prepared(tiny, "prompt")
    assert merged_for_scoring(model) is model  # soft prompts do not merge
    plain, _ = tiny
    assert merged_for_scoring(plain) is plain


def test_ready_for_scoring_merges_lora_and_stores_bf16_weights_scoring_as_autocast(tiny):
    """LoRA merged, then its linear layers stored in bf16: the scores of the merged model
    under autocast, bit for bit."""
    from lmrec.llm.modes import ModeConfig, apply_mode, merged_for_scoring, ready_for_scoring
    from lmrec.llm.scoring import last_log_probs
    from lmrec.llm.tokens import add_id_tokens
    from lmrec.utils.precision import set_precision

    model, tok = tiny
    ids = add_id_tokens(model, tok, 3, 5)
    set_precision(model, torch.bfloat16)
    model = apply_mode(model, ModeConfig(mode="lora"), ids, tok)
    with torch.no_grad():  # adapters that change something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    prompts = ["User <u_0> has watched <i_1>. Answer:", "Answer:"]
    merged = merged_for_scoring(model)
    expected = last_log_probs(merged, tok, prompts)
    ready = ready_for_scoring(merged)
    linears = [m for m in ready.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype is torch.bfloat16 for m in linears)
    assert ready.get_input_embeddings().weight.dtype is torch.float32
    assert torch.equal(last_log_probs(ready, tok, prompts), expected)

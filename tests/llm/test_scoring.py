import numpy as np
import pytest
import torch

from lmrec.llm import scoring
from lmrec.llm.features import prompt_features
from lmrec.llm.generate import generate_constrained, generate_ranking
from lmrec.llm.scoring import (
    last_log_probs,
    score_continuations,
    score_token_candidates,
    score_yes_no,
)
from lmrec.llm.tokens import add_id_tokens

PROMPTS = [
    "User <u_0> has watched <i_1>, <i_2>. Candidates: <i_0>, <i_3>, <i_4>. Answer:",
    "User <u_1> has watched <i_3>. Candidates: <i_1>, <i_2>, <i_0>. Answer:",
    "Answer:",
]


def _slow_log_likelihood(model, tok, prompt: str, answer_ids: list[int]) -> float:
    """log P(answer | prompt), one unpadded sequence at a time."""
    p = tok(prompt)["input_ids"]
    ids = torch.tensor([p + answer_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0], -1)
    return float(sum(logp[len(p) - 1 + k, t] for k, t in enumerate(answer_ids)))


def test_one_pass_topk_equals_the_slow_per_candidate_likelihood(tiny):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 2, 5)
    cands = np.array([[0, 3, 4], [1, 2, 0], [4, 3, 2]])
    fast = score_token_candidates(model, tok, PROMPTS, ids.token_ids("item", cands), batch_size=2)
    slow = [
        [_slow_log_likelihood(model, tok, p, [ids.token_ids("item", int(j))]) for j in row]
        for p, row in zip(PROMPTS, cands, strict=True)
    ]
    assert torch.allclose(fast, torch.tensor(slow), atol=1e-4)


def test_one_pass_batches_prompts_of_similar_length_and_keeps_their_order(tiny, monkeypatch):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 2, 5)
    # long, short, long, short: in the given order every batch of 2 would pad
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[0].replace("<u_0>", "<u_1>"), PROMPTS[2]]
    cands = ids.token_ids("item", np.array([[0, 3], [1, 2], [4, 3], [2, 1]]))
    padded = []
    real_forward = scoring.forward

    def counting_forward(model, input_ids, attention_mask, **kw):
        padded.append(int((attention_mask == 0).sum()))
        return real_forward(model, input_ids, attention_mask, **kw)

    monkeypatch.setattr(scoring, "forward", counting_forward)
    got = score_token_candidates(model, tok, prompts, cands, batch_size=2)
    assert padded == [0, 0]
    monkeypatch.setattr(scoring, "forward", real_forward)
    for i, p in enumerate(prompts):  # each row is its own prompt's, scored alone
        alone = score_token_candidates(model, tok, [p], cands[i : i + 1], batch_size=1)
        assert torch.allclose(got[i], alone[0], atol=1e-5)


def test_batched_continuations_equal_one_at_a_time(tiny):
    model, tok = tiny
    conts = [[" Yes", " No the", " a"], [" the one", " User", " Yes"], [" a", " b", " c"]]
    fast = score_continuations(
        model,
        tok,
        PROMPTS[:1] + PROMPTS[2:] + PROMPTS[1:2],
        [conts[0], conts[2], conts[1]],
        batch_size=4,
    )
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[1]]
    for b, row in enumerate([conts[0], conts[2], conts[1]]):
        for c, text in enumerate(row):
            ans = tok(text, add_special_tokens=False)["input_ids"]
            assert abs(fast[b, c] - _slow_log_likelihood(model, tok, prompts[b], ans)) < 1e-4
    mean = score_continuations(model, tok, PROMPTS[:1], conts[:1], normalize=True)
    n_tok = len(tok(" No the", add_special_tokens=False)["input_ids"])
    assert torch.allclose(mean[0, 1], fast[0, 1] / n_tok, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3, 8, 64])
def test_prompt_cache_scoring_equals_full_rows(tiny, batch_size):
    # prompts of different lengths share a chunk (left padding in the cache) once batch_size
    # holds several prompts' continuations; continuations of 1 to 3 tokens are right padded
    model, tok = tiny
    conts = [[" Yes", " No the", " a"], [" the one", " User", " Yes"], [" a b c", " b", " c"]]
    args = (model, tok, PROMPTS, conts, batch_size)
    for normalize in (False, True):
        cached = scoring._score_continuations_cached(*args, normalize)
        full = scoring._score_continuations_full(*args, normalize)
        assert cached.shape == (3, 3)
        assert torch.allclose(cached, full, atol=1e-4)
        assert torch.equal(score_continuations(*args, normalize=normalize), cached)


def test_the_prefix_cache_goes_by_the_name_the_models_forward_takes(tiny, monkeypatch):
    # transformers 5.24 renamed past_key_values= to cache= (the old name is removed in 5.40);
    # an older transformers has only past_key_values=. Both must give the full rows' scores.
    import inspect

    from lmrec.utils.modules import cache_argument
    from lmrec.utils.precision import set_precision

    model, tok = tiny
    conts = [[" Yes", " No the"], [" the one", " User"], [" a b c", " b"]]
    args = (model, tok, PROMPTS, conts, 8, False)
    full = scoring._score_continuations_full(*args)
    takes_cache = "cache" in inspect.signature(type(model).forward).parameters
    assert cache_argument(model) == ("cache" if takes_cache else "past_key_values")
    set_precision(model, torch.bfloat16)  # an instance forward taking **kwargs hides nothing
    try:
        assert cache_argument(model) == ("cache" if takes_cache else "past_key_values")
    finally:
        set_precision(model, None)
    seen = []
    real = type(model).forward

    def old_forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=None,
        logits_to_keep=0,
        **kw,
    ):
        assert "cache" not in kw
        seen.append(past_key_values is not None)
        by = {"cache": past_key_values} if takes_cache else {"past_key_values": past_key_values}
        return real(
            self,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **by,
            **kw,
        )

    monkeypatch.setattr(type(model), "forward", old_forward)
    assert cache_argument(model) == "past_key_values"
    cached = scoring._score_continuations_cached(*args)
    assert seen and all(seen)
    assert torch.allclose(cached, full, atol=1e-4)


def test_yes_no_is_the_log_odds_of_the_first_answer_token(tiny):
    model, tok = tiny
    s = score_yes_no(model, tok, PROMPTS)
    logp = last_log_probs(model, tok, PROMPTS)
    y = tok(" Yes", add_special_tokens=False)["input_ids"][0]
    n = tok(" No", add_special_tokens=False)["input_ids"][0]
    assert torch.allclose(s, logp[:, y] - logp[:, n], atol=1e-5)


def test_yes_no_of_one_users_prompts_runs_their_common_beginning_once(tiny, monkeypatch):
    from lmrec.llm import prefix

    model, tok = tiny
    ids = add_id_tokens(model, tok, 2, 5)
    prompts = [
        f"User <u_{u}> has watched <i_1>, <i_2>. Will the user like <i_{j}>? Answer:"
        for u, items in ((0, (0, 3, 4)), (1, (4, 2)))
        for j in items
    ]
    assert ids.n_items == 5
    passes = []
    real = prefix.prefix_then_suffixes

    def counting(model, prefix_ids, p_mask, owner, suffix, s_mask, **kw):
        passes.append((prefix_ids.shape[0], suffix.shape[0], suffix.shape[1]))
        return real(model, prefix_ids, p_mask, owner, suffix, s_mask, **kw)

    monkeypatch.setattr(prefix, "prefix_then_suffixes", counting)
    shared = score_yes_no(model, tok, prompts, batch_size=8)
    plain = score_yes_no(model, tok, prompts, share_prefix=False)
    assert torch.allclose(shared, plain, atol=1e-4)
    # one pass: the two users' beginnings once each, then 5 suffixes of a few tokens
    assert len(passes) == 1 and passes[0][:2] == (2, 5) and passes[0][2] <= 6


def test_constrained_generation_only_spells_candidates(tiny):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 2, 5)
    cands = [
        ["<i_0>", "<i_3>", "<i_4>"],
        [" the one", " User has", " Yes"],
        ["<i_1>", "<i_2>", "<i_0>"],
    ]
    chosen = generate_constrained(model, tok, PROMPTS, cands, batch_size=2, max_new_tokens=6)
    assert all(0 <= c < 3 for c in chosen)
    # with single-token candidates the choice is the one-pass argmax, and so is the ranking's head
    cand_ids = ids.token_ids("item", np.array([[0, 3, 4], [1, 2, 0], [4, 3, 2]]))
    one_pass = score_token_candidates(model, tok, PROMPTS, cand_ids).argmax(1).numpy()
    assert chosen[0] == one_pass[0]
    ranking = generate_ranking(model, tok, PROMPTS, cand_ids, batch_size=2)
    assert (ranking[:, 0] == one_pass).all()
    assert all(sorted(r) == [0, 1, 2] for r in ranking.tolist())


def test_prompt_features_are_the_last_top_layer_state_whatever_the_padding(tiny):
    model, tok = tiny
    feats = prompt_features(model, PROMPTS, tok, batch_size=3)
    assert feats.shape == (3, model.config.hidden_size)
    with torch.no_grad():
        alone = model(torch.tensor([tok(PROMPTS[2])["input_ids"]]), output_hidden_states=True)
    assert torch.allclose(feats[2], alone.hidden_states[-1][0, -1], atol=1e-4)


def test_text_ranking_generates_every_candidate_once(tiny):
    from lmrec.llm.generate import generate_text_ranking

    model, tok = tiny
    cands = [["the one", "User has", "Yes"], ["a", "a b", "b"]]
    ranks = generate_text_ranking(model, tok, PROMPTS[:2], cands, sep=";", batch_size=2)
    assert ranks.shape == (2, 3)
    assert all(sorted(r) == [0, 1, 2] for r in ranks.tolist())


def _has_cxx() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def test_without_a_compiler_the_layers_stay_eager_with_a_warning(tiny, monkeypatch):
    from lmrec.llm.scoring import compile_layers, decoder_layers

    model, tok = tiny
    before = score_token_candidates(model, tok, PROMPTS, [[5, 6], [7, 8], [9, 10]])

    def no_compiler(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(UserWarning, match="not usable here.*no C\\+\\+ compiler"):
        assert compile_layers(model) is False
    assert not any("forward" in vars(layer) for layer in decoder_layers(model))
    assert model.config._attn_implementation == "sdpa"  # untouched
    after = score_token_candidates(model, tok, PROMPTS, [[5, 6], [7, 8], [9, 10]])
    assert torch.equal(before, after)


@pytest.mark.skipif(not _has_cxx(), reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_layers_score_and_train_as_the_eager_model(tiny):
    """One compiled graph for all layers: the same scores and losses to float tolerance, the
    cached-prefix path still eager, a second call a no-op."""
    import copy

    from torch._dynamo.utils import counters

    from lmrec.llm.scoring import compile_layers, decoder_layers

    model, tok = tiny
    ids = add_id_tokens(model, tok, 3, 5)
    cand = ids.token_ids("item", np.array([[0, 3, 4], [1, 2, 0], [4, 3, 2]]))
    eager = copy.deepcopy(model)
    torch._dynamo.reset()
    counters.clear()
    assert compile_layers(model) is True
    assert all(layer.lmrec_compiled for layer in decoder_layers(model))
    assert compile_layers(model) is True  # already patched: nothing recompiled
    assert model.config._attn_implementation == "eager"  # its softmax is fused on a CPU
    probe = counters["stats"]["unique_graphs"]  # the toy function's
    torch.testing.assert_close(
        score_token_candidates(model, tok, PROMPTS, cand),
        score_token_candidates(eager, tok, PROMPTS, cand),
        atol=1e-4,
        rtol=1e-4,
    )
    # both layers ran through one graph (a graph per layer would recompile at every layer)
    assert counters["stats"]["unique_graphs"] - probe == 1
    copied = copy.deepcopy(model)  # the patch follows the copy: its own weights, not model's
    with torch.no_grad():
        copied.model.layers[0].mlp.down_proj.weight.mul_(2)
    assert not torch.allclose(
        score_token_candidates(copied, tok, PROMPTS, cand),
        score_token_candidates(model, tok, PROMPTS, cand),
    )
    torch.testing.assert_close(  # a key/value cache: the eager layers, same numbers
        score_yes_no(model, tok, PROMPTS[:2], share_prefix=True),
        score_yes_no(eager, tok, PROMPTS[:2], share_prefix=True),
        atol=1e-4,
        rtol=1e-4,
    )
    batch = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, -3:] = batch["input_ids"][:, -3:]  # answers at the end (left padding)
    losses, grads = [], []
    before = counters["stats"]["unique_graphs"]
    for m in (model, eager):  # a training step: the same loss and gradients
        m.train()
        loss = m(**batch, labels=labels, use_cache=False).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert counters["stats"]["unique_graphs"] > before  # the training graph: compiled code ran
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-3)


@pytest.mark.skipif(not _has_cxx(), reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_lora_layers_with_checkpointing_train_and_score_as_eager(tiny):
    """LoRA adapters inside the compiled layers, activation checkpointing around them, then
    merged for scoring (the graph recompiles for the merged layers). Dropout off here:
    tests/llm/test_dropout.py compares compiled LoRA dropout with eager."""
    import copy

    from lmrec.llm.finetune import enable_checkpointing
    from lmrec.llm.modes import ModeConfig, apply_mode, ready_for_scoring
    from lmrec.llm.scoring import compile_layers

    model, tok = tiny
    ids = add_id_tokens(model, tok, 3, 5)
    model = apply_mode(model, ModeConfig(mode="lora", lora_dropout=0.0), ids, tok)
    eager = copy.deepcopy(model)
    assert compile_layers(model)
    batch = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, -3:] = batch["input_ids"][:, -3:]
    grads = []
    for m in (model, eager):
        enable_checkpointing(m)
        m.train()
        m(**batch, labels=labels, use_cache=False).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert grads[0].numel() == grads[1].numel() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-3)
    cand = ids.token_ids("item", np.array([[0, 3, 4], [1, 2, 0], [4, 3, 2]]))
    torch.testing.assert_close(
        score_token_candidates(ready_for_scoring(model, compile=True), tok, PROMPTS, cand),
        score_token_candidates(ready_for_scoring(eager), tok, PROMPTS, cand),
        atol=1e-4,
        rtol=1e-4,
    )

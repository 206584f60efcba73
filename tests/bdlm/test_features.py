"""h_LLM: shared-prefix encoding equals whole prompts; the cache follows the LLM's weights."""

import torch

from lmrec.bdlm.features import FeatureCache
from lmrec.llm.features import prompt_features
from lmrec.llm.modes import ModeConfig, apply_mode
from lmrec.llm.prefix import prefix_groups, shared_prefix_features
from lmrec.llm.resolve import load_llm
from lmrec.llm.tokens import add_id_tokens

BASE = "User <u_1> has watched <i_0>, <i_3>. Predict if he/she will watch"
PROMPTS = [f"{BASE} <i_{j}> next. Answer:" for j in range(5)] + [
    "User <u_2> has watched nothing yet. Predict if he/she will watch <i_4> next. Answer:",
    f"{BASE} <i_7> (a much longer title than the others) next. Answer:",
]


def _llm(with_ids=False):
    model, tok = load_llm("tiny-llama", device="cpu")
    ids = add_id_tokens(model, tok, 3, 8)
    return (model.eval(), tok, ids) if with_ids else (model.eval(), tok)


def test_prefix_groups_share_a_prefix_and_keep_a_suffix():
    seqs = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7, 8], [9, 9, 9, 9, 9], [9, 9, 9, 9, 9]]
    assert prefix_groups(seqs) == [(5, [0, 1]), (4, [2, 3])]  # identical ones keep one token


def test_shared_prefix_features_equal_whole_prompt_features():
    model, tok = _llm()
    whole = prompt_features(model, PROMPTS, tok, batch_size=3)
    shared = shared_prefix_features(model, tok, PROMPTS, batch_size=2)
    assert shared.shape == whole.shape == (len(PROMPTS), model.config.hidden_size)
    assert torch.allclose(shared, whole, atol=1e-5)


def test_shared_prefix_features_through_a_peft_model():
    model, tok, ids = _llm(with_ids=True)
    torch.manual_seed(0)
    model = apply_mode(model, ModeConfig(mode="lora"), ids, tok).eval()
    assert torch.allclose(
        shared_prefix_features(model, tok, PROMPTS), prompt_features(model, PROMPTS, tok), atol=1e-5
    )


def test_cache_is_reused_while_the_weights_do_not_change():
    model, tok = _llm()
    cache = FeatureCache()
    first = cache.features(model, tok, PROMPTS[:3])
    again = cache.features(model, tok, PROMPTS[:3])
    assert torch.equal(first, again)
    assert (cache.misses, cache.hits, cache.invalidations) == (3, 3, 0)
    cache.features(model, tok, PROMPTS[2:4])  # one new prompt, one cached
    assert (cache.misses, cache.hits) == (4, 4)


def test_cache_is_invalidated_by_an_optimiser_step():
    model, tok = _llm()
    cache = FeatureCache()
    before = cache.features(model, tok, PROMPTS[:2])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = tok(PROMPTS[:1], return_tensors="pt")
    model(**batch, labels=batch["input_ids"]).loss.backward()
    opt.step()
    after = cache.features(model, tok, PROMPTS[:2])
    assert cache.invalidations == 1 and cache.misses == 4 and cache.hits == 0
    assert not torch.allclose(before, after)
    assert torch.allclose(after, prompt_features(model.eval(), PROMPTS[:2], tok), atol=1e-5)


def test_cache_is_invalidated_by_the_llms_fused_adamw_step():
    """PyTorch's fused AdamW leaves the weights' _version unchanged; the LLM's optimiser counts
    its steps on the model instead, and the cache sees them."""
    from lmrec.llm.finetune import LLMOptimConfig, LLMOptimizer

    model, tok = _llm()
    cache = FeatureCache()
    before = cache.features(model, tok, PROMPTS[:2])
    stepper = LLMOptimizer(model, LLMOptimConfig(lr=0.01, warmup_steps=0))
    assert stepper.opt.param_groups[0]["fused"] is True
    batch = tok(PROMPTS[:1], return_tensors="pt")
    stepper.step(model(**batch, labels=batch["input_ids"]).loss, 0)
    after = cache.features(model, tok, PROMPTS[:2])
    assert cache.invalidations == 1 and cache.misses == 4 and cache.hits == 0
    assert not torch.allclose(before, after)


def test_cache_is_invalidated_by_loading_weights():
    model, tok = _llm()
    cache = FeatureCache()
    cache.features(model, tok, PROMPTS[:1])
    state = {k: v + 0.01 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    cache.features(model, tok, PROMPTS[:1])
    assert cache.invalidations == 1 and cache.misses == 2

import pytest
import torch

from lmrec.errors import ConfigError
from lmrec.llm.resolve import load_llm, resolve_dtype, word_tokenizer
from lmrec.llm.scoring import score_continuations, score_yes_no


def test_tiny_llama_is_small_tied_and_left_padded(tiny):
    model, tok = tiny
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 48
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert next(model.parameters()).dtype == torch.float32
    # the same seed builds the same weights
    again, _ = load_llm("tiny-llama", device="cpu")
    assert torch.equal(
        again.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight
    )


def test_word_tokenizer_maps_unknown_words_to_unk():
    tok = word_tokenizer()
    ids = tok("User has watched Zanzibar", add_special_tokens=False)["input_ids"]
    assert len(ids) == 4 and ids[-1] == tok.unk_token_id and tok.unk_token_id not in ids[:3]


def test_dtype_and_spec_errors():
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        resolve_dtype("float7", torch.device("cpu"))
    with pytest.raises(ConfigError, match="neither a known offline model"):
        load_llm("no such model", device="cpu")


@pytest.mark.slow
def test_smollm2_from_the_shipped_gguf_scores_sensibly():
    model, tok = load_llm("smollm2-135m", device="cpu")
    assert model.config.hidden_size == 576
    s = score_continuations(model, tok, ["The capital of France is"], [[" Paris", " banana"]])
    assert s[0, 0] > s[0, 1]
    yn = score_yes_no(
        model,
        tok,
        [f"Question: Is Paris a city in {c}? Answer (Yes or No):" for c in ("France", "Peru")],
    )
    assert torch.isfinite(yn).all() and yn[0] > yn[1]

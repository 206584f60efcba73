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


def test_chunked_shipped_file_is_assembled_once_and_checked(tmp_path, monkeypatch):
    """A model shipped in parts is joined into the cache; a join that does not match the
    published checksum raises and leaves nothing behind."""
    import hashlib
    import importlib.util
    import types

    from lmrec.errors import SourceNotFoundError
    from lmrec.llm import resolve

    parts = [b"GGUF" + bytes(range(7)), b"second part", b"end"]
    for i, data in enumerate(parts):
        (tmp_path / f"pkg{i}").mkdir()
        (tmp_path / f"pkg{i}" / "f.part").write_bytes(data)
    found = {
        f"pkg{i}": types.SimpleNamespace(submodule_search_locations=[str(tmp_path / f"pkg{i}")])
        for i in range(3)
    }
    monkeypatch.setattr(importlib.util, "find_spec", found.get)
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "cache"))
    whole = b"".join(parts)

    def ship(sha):
        return resolve.ShippedGGUF("m", tuple(found), ("f.part",) * 3, "pip install m", sha)

    monkeypatch.setitem(resolve.SHIPPED, "m", ship(hashlib.sha256(whole).hexdigest()))
    path = resolve.shipped_gguf_path("m")
    assert path.read_bytes() == whole and path.parent == tmp_path / "cache" / "models"

    path.unlink()
    monkeypatch.setitem(resolve.SHIPPED, "m", ship("0" * 64))
    with pytest.raises(SourceNotFoundError, match="does not match its published sha256"):
        resolve.shipped_gguf_path("m")
    assert list(path.parent.iterdir()) == []


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

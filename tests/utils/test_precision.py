"""bf16 autocast: CPU detection from the flags, the resolved precision, its effect on scores."""

from __future__ import annotations

import pytest
import torch

from lmrec.errors import ConfigError
from lmrec.utils import precision
from lmrec.utils.precision import cpu_has_bf16, resolve_precision


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 {flags}\n\n")
    return str(path)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("avx512f amx_bf16 amx_tile", True), ("avx512f avx512_bf16", True), ("avx2 avx512f", False)],
)
def test_cpu_bf16_is_read_from_the_flags(tmp_path, flags, expected):
    assert cpu_has_bf16(_cpuinfo(tmp_path, flags)) is expected


def test_no_cpuinfo_means_no_bf16(tmp_path):
    assert cpu_has_bf16(str(tmp_path / "missing")) is False


def test_resolution(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") is torch.bfloat16
    assert resolve_precision("fp32", "cpu") is None
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") is None  # emulated bf16 would be slower
    assert resolve_precision("bf16", "cpu") is torch.bfloat16  # asked for: honoured
    with pytest.raises(ConfigError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


def test_autocast_scores_close_to_fp32_and_returns_fp32_logits():
    from lmrec.llm.resolve import load_llm
    from lmrec.llm.scoring import last_log_probs
    from lmrec.utils.precision import set_precision

    torch.set_num_threads(1)
    model, tok = load_llm("tiny-llama", device="cpu")
    prompts = ["alpha beta gamma", "delta", "beta beta alpha delta gamma"]
    full = last_log_probs(model, tok, prompts)
    set_precision(model, torch.bfloat16)
    half = last_log_probs(model, tok, prompts)
    assert half.dtype == torch.float32
    assert not torch.equal(full, half)  # the products did run in bf16
    torch.testing.assert_close(half, full, atol=0.05, rtol=0.02)
    set_precision(model, None)
    assert torch.equal(last_log_probs(model, tok, prompts), full)  # undone


def test_runs_written_before_the_option_are_read_as_fp32():
    from lmrec.llm.run import saved_run

    assert saved_run({"dataset": "d", "llm": {"model": "m"}})["llm"]["precision"] == "fp32"
    assert saved_run({"dataset": "d", "llm": {"model": "m"}})["llm"]["compile"] is False
    assert saved_run({"dataset": "d", "llm": {"precision": "auto"}})["llm"]["precision"] == "auto"


def test_stored_weights_score_as_autocast_bit_for_bit_and_the_embedding_stays_fp32():
    from lmrec.llm.resolve import load_llm
    from lmrec.llm.scoring import last_log_probs
    from lmrec.utils.precision import set_precision, store_weights

    torch.set_num_threads(1)
    model, tok = load_llm("tiny-llama", device="cpu")
    model.requires_grad_(False)
    prompts = ["alpha beta gamma", "delta", "beta beta alpha delta gamma"]
    set_precision(model, torch.bfloat16)
    autocast = last_log_probs(model, tok, prompts)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert store_weights(model) == len(linears)
    assert all(m.weight.dtype is torch.bfloat16 for m in linears)
    embedding = model.get_input_embeddings().weight
    assert embedding.dtype is torch.float32  # the tied head got its own bf16 copy
    assert model.get_output_embeddings().weight.data_ptr() != embedding.data_ptr()
    assert torch.equal(last_log_probs(model, tok, prompts), autocast)
    with pytest.raises(ConfigError, match="stored in torch.bfloat16"):
        set_precision(model, None)  # fp32 products over bf16 weights: refused
    set_precision(model, torch.bfloat16)  # the same dtype again is fine


def test_a_model_without_autocast_keeps_its_fp32_weights():
    from lmrec.llm.resolve import load_llm
    from lmrec.utils.precision import set_precision, store_weights

    model, _ = load_llm("tiny-llama", device="cpu")
    set_precision(model, None)
    assert store_weights(model) == 0
    assert all(p.dtype is torch.float32 for p in model.parameters())


def test_a_deep_copy_computes_with_its_own_weights_under_the_same_autocast():
    import copy

    from lmrec.llm.resolve import load_llm
    from lmrec.llm.scoring import last_log_probs
    from lmrec.utils.precision import set_precision

    model, tok = load_llm("tiny-llama", device="cpu")
    set_precision(model, torch.bfloat16)
    twin = copy.deepcopy(model)
    assert twin.lmrec_precision is torch.bfloat16
    prompts = ["alpha beta gamma", "delta"]
    assert torch.equal(last_log_probs(twin, tok, prompts), last_log_probs(model, tok, prompts))
    with torch.no_grad():
        twin.lm_head.weight.mul_(3)  # tied: the embedding too
    assert not torch.allclose(
        last_log_probs(twin, tok, prompts), last_log_probs(model, tok, prompts)
    )

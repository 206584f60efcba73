"""The LLM side on a CUDA device: the same scores as on the CPU, bf16 autocast chosen there.

Marked ``gpu``: skipped where no CUDA device is present (CI); run where one is lent with
``pytest -m gpu``.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_scores_on_cuda_match_the_cpu():
    from lmrec.llm.resolve import load_llm
    from lmrec.llm.scoring import last_log_probs

    prompts = ["alpha beta gamma", "delta", "beta beta alpha delta gamma"]
    cpu, tok = load_llm("tiny-llama", device="cpu", dtype="float32")
    gpu, _ = load_llm("tiny-llama", device="cuda", dtype="float32")
    torch.testing.assert_close(
        last_log_probs(gpu, tok, prompts), last_log_probs(cpu, tok, prompts), atol=1e-3, rtol=1e-3
    )


def test_auto_precision_is_bf16_on_a_cuda_device_that_has_it():
    from lmrec.utils.precision import resolve_precision

    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert resolve_precision("auto", "cuda") is expected

"""h_LLM (BDLM 4.2): the top-layer hidden state of a prompt at its last position.

The domain side concatenates this feature with its own user-item feature (BDLM eqs. 5-6). Left
padding puts every prompt's last token at the last position; the final hidden state is taken
after the model's final norm (``hidden_states[-1]`` in transformers), and the vocabulary
projection is skipped (``logits_to_keep=1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import Tensor

from lmrec.llm.scoring import encode, forward, model_device


def prompt_features(
    model,
    prompts: Sequence[str] | dict[str, Tensor],
    tokenizer=None,
    batch_size: int = 16,
    grad: bool = False,
) -> Tensor:
    """Top-layer feature of each prompt: (B, hidden).

    Parameters
    ----------
    prompts:
        Prompt texts (then ``tokenizer`` is required) or an already left-padded batch with
        ``input_ids`` and ``attention_mask``.
    grad:
        Keep the graph (joint training through the LLM); by default features are computed
        under ``inference_mode`` and returned on the CPU in float32.
    """
    if isinstance(prompts, dict):
        batches = [prompts]
    else:
        if tokenizer is None:
            raise ValueError("prompt_features needs the tokenizer to encode prompt texts")
        device = model_device(model)
        batches = [
            encode(tokenizer, prompts[s : s + batch_size], device)
            for s in range(0, len(prompts), batch_size)
        ]
    feats = []
    with nullcontext() if grad else torch.inference_mode():
        for batch in batches:
            out = forward(
                model, batch["input_ids"], batch["attention_mask"], output_hidden_states=True
            )
            h = out.hidden_states[-1][:, -1].float()  # bf16 under autocast
            feats.append(h if grad else h.cpu())
    if not feats:
        return torch.zeros(0, model.config.hidden_size)
    return torch.cat(feats)

"""Prompts that share a beginning, run once: the shared-prefix key/value cache passes.

The interaction prompts of one user ("User <u_1> has watched ... Predict if he/she will watch
<i_48> (Pocahontas) next. Answer:") differ only in their last few tokens. :func:`prefix_groups`
groups consecutive prompts by their common token prefix; :func:`shared_prefix_last` runs each
group's prefix once (:func:`lmrec.llm.scoring.prefix_then_suffixes`), copies its key/value cache
to every member and runs only the differing suffixes, then reads the last position: the
top-layer feature (BDLM's h_LLM, :mod:`lmrec.bdlm.features`) or next-token log-probabilities
(P(Yes) / P(No), :func:`lmrec.llm.scoring.score_yes_no`). The same tokens at the same positions,
so the same values as whole prompts up to float rounding (tests/bdlm/test_features.py,
tests/llm/test_scoring.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lmrec.llm.scoring import model_device, pad_ids, prefix_then_suffixes
from lmrec.utils.precision import autocast

MIN_SHARED = 4  # tokens two prompts must share to be encoded as one group


def _common_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


def prefix_groups(token_ids: list[list[int]]) -> list[tuple[int, list[int]]]:
    """Split consecutive token sequences into groups sharing a prefix.

    Returns ``(prefix_length, member indices)`` per group: every member starts with the same
    ``prefix_length`` tokens and keeps at least one token after them. A sequence joins the
    current group when it shares at least :data:`MIN_SHARED` tokens with the group's prefix.
    """
    groups: list[tuple[int, list[int]]] = []
    for k, ids in enumerate(token_ids):
        if groups:
            length, members = groups[-1]
            first = token_ids[members[0]]
            shared = min(length, _common_length(first, ids), len(ids) - 1)
            if shared >= MIN_SHARED:
                groups[-1] = (shared, [*members, k])
                continue
        groups.append((len(ids) - 1, [k]))
    return groups


@torch.inference_mode()
def shared_prefix_last(
    model, tokenizer, prompts: Sequence[str], batch_size: int = 8, token_ids=None
) -> Tensor:
    """The last position of each prompt, encoding shared prefixes once.

    Without ``token_ids``: the top-layer feature there, (n, d) (h_LLM). With ``token_ids``
    (C,): the log-probabilities of those tokens as the next token, (n, C) (P(Yes) / P(No)).

    Prompts are tokenized as :func:`lmrec.llm.scoring.encode` does (with the tokenizer's
    special tokens); groups of consecutive prompts with a common token prefix
    (:func:`prefix_groups`) run that prefix once (left padded, ``batch_size`` groups per pass),
    its key/value cache is repeated for each member, and the members' suffixes run on top of it
    (right padded, positions continuing after the prefix). Returns CPU float32.
    """
    head = None if token_ids is None else model.get_output_embeddings()
    columns = None if token_ids is None else torch.as_tensor(list(token_ids), dtype=torch.long)
    device = model_device(model)
    ids = tokenizer(list(prompts))["input_ids"]
    groups = prefix_groups(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = torch.zeros(len(prompts), model.config.hidden_size if columns is None else len(columns))
    for start in range(0, len(groups), batch_size):
        chunk = groups[start : start + batch_size]
        # prefixes, left padded: (G, P)
        prefix, p_mask = pad_ids([ids[members[0]][:length] for length, members in chunk], pad)
        # suffixes, right padded: (R, S), each row continuing its group's prefix
        rows = [(g, k) for g, (_, members) in enumerate(chunk) for k in members]
        owner = torch.tensor([g for g, _ in rows])
        suffixes = [ids[k][chunk[g][0] :] for g, k in rows]
        s_len = torch.tensor([len(s) for s in suffixes])
        suffix, s_mask = pad_ids(suffixes, pad, left=False)
        _, result = prefix_then_suffixes(
            model,
            prefix.to(device),
            p_mask.to(device),
            owner.to(device),
            suffix.to(device),
            s_mask.to(device),
            output_hidden_states=True,
            logits_to_keep=1,
        )
        # the top layer's output (after the final norm) at each row's last real token
        last = result.hidden_states[-1][torch.arange(len(rows)), (s_len - 1).to(device)]
        if columns is not None:  # the vocabulary projection of those positions only
            with autocast(device, getattr(model, "lmrec_precision", None)):
                logits = head(last.to(head.weight.dtype))
            last = torch.log_softmax(logits.float(), -1)[:, columns.to(device)]
        out[torch.tensor([k for _, k in rows])] = last.float().cpu()
    return out


def shared_prefix_features(model, tokenizer, prompts: Sequence[str], batch_size: int = 8) -> Tensor:
    """h_LLM of each prompt (:func:`shared_prefix_last` without token ids): (n, d)."""
    return shared_prefix_last(model, tokenizer, prompts, batch_size)

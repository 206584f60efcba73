"""h_LLM for the domain side (BDLM 4.2), computed once per prompt and cached.

:class:`FeatureCache` maps prompt text -> the LLM's top-layer feature at the prompt's last
position (the same feature as :func:`lmrec.llm.features.prompt_features`). Entries are valid
for one state of the LLM only: the cache key includes :func:`weights_fingerprint`, which changes
whenever any LLM parameter is modified in place (an optimiser step, ``load_state_dict``), so
the cache empties itself as soon as the LLM changes and is reused while it does not.

Prompts that share a beginning are not encoded twice. BDLM-drs scores each (user, candidate)
pair with its own interaction prompt ("User <u_1> has watched ... Predict if he/she will watch
<i_48> (Pocahontas) next. Answer:"): the 20 candidates of a user differ only in the last few
tokens. :func:`shared_prefix_features` runs the common token prefix of each group once, copies
its key/value cache to every member, and runs only the differing suffixes: about 20 short
suffixes instead of 20 whole prompts, the same tokens and the same positions, so the same
features up to float rounding (tests/bdlm/test_features.py checks this against
``prompt_features``). Soft-prompt (peft prompt-tuning) models take the plain path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lmrec.llm.features import prompt_features
from lmrec.llm.prefix import shared_prefix_features
from lmrec.llm.scoring import is_prompt_learning


def weights_fingerprint(model) -> tuple:
    """A value that changes whenever a parameter of ``model`` is modified in place.

    A tensor's ``_version`` counts its in-place updates (``copy_``, a foreach optimiser step),
    so together with the storage address it identifies the weights' state without hashing
    them. PyTorch's fused AdamW kernel writes the weights without counting, so the LLM's
    optimiser (:class:`lmrec.llm.finetune.LLMOptimizer`) also counts its steps on the model
    (``lmrec_updates``), and that count is part of the fingerprint.
    """
    return (
        getattr(model, "lmrec_updates", 0),
        tuple((p.data_ptr(), p._version) for p in model.parameters()),
    )


class FeatureCache:
    """Prompt text -> h_LLM (d,) float32 on the CPU, for the current state of the LLM.

    Parameters
    ----------
    batch_size:
        Prompt groups per forward pass.
    share_prefix:
        Encode the common prefix of consecutive prompts once (:func:`shared_prefix_features`).
    """

    def __init__(self, batch_size: int = 8, share_prefix: bool = True) -> None:
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.fingerprint: tuple | None = None
        self.store: dict[str, Tensor] = {}
        self.hits = 0
        self.misses = 0
        self.invalidations = 0

    def __len__(self) -> int:
        return len(self.store)

    def clear(self) -> None:
        self.store.clear()
        self.fingerprint = None

    def features(self, model, tokenizer, prompts: Sequence[str]) -> Tensor:
        """(n, d) features of ``prompts``; computes only those not cached for this LLM state.

        Keep prompts of one user next to each other: consecutive prompts with a common
        beginning are encoded as one group.
        """
        fp = weights_fingerprint(model)
        if fp != self.fingerprint:
            if self.store:
                self.invalidations += 1
            self.store.clear()
            self.fingerprint = fp
        missing = list(dict.fromkeys(p for p in prompts if p not in self.store))
        self.misses += len(missing)
        self.hits += len(prompts) - len(missing)
        if missing:
            feats = self._compute(model, tokenizer, missing)
            self.store.update(zip(missing, feats, strict=True))
        if not prompts:
            return torch.zeros(0, model.config.hidden_size)
        return torch.stack([self.store[p] for p in prompts])

    def _compute(self, model, tokenizer, prompts: list[str]) -> Tensor:
        training = model.training
        model.eval()  # features are read without dropout, as at inference
        try:
            if self.share_prefix and not is_prompt_learning(model):
                return shared_prefix_features(model, tokenizer, prompts, self.batch_size)
            return prompt_features(model, prompts, tokenizer, batch_size=self.batch_size)
        finally:
            model.train(training)

"""The LLM side: model resolution, user/item tokens, prompts as data, training modes, scoring.

Modules, in the order data flows through them:

- :mod:`~lmrec.llm.resolve`: ``load_llm(spec)`` -> (model, tokenizer); shipped GGUFs cached as
  safetensors, a tiny random Llama for tests.
- :mod:`~lmrec.llm.tokens`: ``<u_i>``/``<i_j>`` tokens, the mixed embedding, pre-loading.
- :mod:`~lmrec.llm.templates` / :mod:`~lmrec.llm.prompts`: BDLM Table 2 prompts as data.
- :mod:`~lmrec.llm.sft`: training prompts, answer-only labels, the collator.
- :mod:`~lmrec.llm.modes`: full / lora / extra / prompt / none.
- :mod:`~lmrec.llm.finetune`: the SFT step and the LLM optimiser, run on :mod:`lmrec.train.loop`.
- :mod:`~lmrec.llm.scoring`: one-pass candidate scoring, P(Yes), constrained generation.
- :mod:`~lmrec.llm.features`: h_LLM for the domain side.
- :mod:`~lmrec.llm.run`: ``llm_train`` / ``llm_evaluate`` (what the CLI calls).
- :mod:`~lmrec.llm.baselines`: LLM-Rec, InstructRec, GPT4SM.
"""

from lmrec.llm.config import LLMRunConfig, LLMSideConfig
from lmrec.llm.features import prompt_features
from lmrec.llm.modes import ModeConfig, apply_mode
from lmrec.llm.prompts import PromptBuilder, PromptConfig
from lmrec.llm.resolve import load_llm
from lmrec.llm.run import llm_evaluate, llm_train, load_llm_run
from lmrec.llm.scoring import score_continuations, score_token_candidates, score_yes_no
from lmrec.llm.tokens import IdTokens, add_id_tokens, id_token_rows, preload_id_tokens

__all__ = [
    "IdTokens",
    "LLMRunConfig",
    "LLMSideConfig",
    "ModeConfig",
    "PromptBuilder",
    "PromptConfig",
    "add_id_tokens",
    "apply_mode",
    "id_token_rows",
    "llm_evaluate",
    "llm_train",
    "load_llm",
    "load_llm_run",
    "preload_id_tokens",
    "prompt_features",
    "score_continuations",
    "score_token_candidates",
    "score_yes_no",
]

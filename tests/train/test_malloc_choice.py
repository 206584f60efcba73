"""Which CPU allocator policy a training run gets: the fast one, unless it trades time for
memory (gradient checkpointing)."""

import pytest
import torch

from lmrec.llm.finetune import FinetuneConfig, train_sft
from lmrec.llm.prompts import Prompt
from lmrec.train import loop as loop_module
from lmrec.utils.memory import DEFAULT_POLICY, LEAN_POLICY


@pytest.fixture
def chosen(monkeypatch):
    calls = []
    monkeypatch.setattr(loop_module, "configure_malloc", lambda policy=None: calls.append(policy))
    return calls


def test_the_loop_applies_the_lean_policy_only_when_asked(chosen):
    for lean in (False, True):
        module = torch.nn.Linear(2, 2)
        loop_module.Loop(
            [loop_module.Part("model", module)], {}, steps_per_epoch=1, epochs=1, lean_memory=lean
        ).start()
    assert chosen == [None, LEAN_POLICY]  # None: configure_malloc's default
    assert DEFAULT_POLICY == "heap" and LEAN_POLICY == "reuse"


@pytest.mark.parametrize("checkpointing", [False, True])
def test_llm_training_with_checkpointing_gets_the_lean_policy(chosen, checkpointing):
    from lmrec.llm.resolve import tiny_llama

    model, tok = tiny_llama("word")
    config = FinetuneConfig(batch_size=1, max_steps=1, gradient_checkpointing=checkpointing)
    train_sft(model, tok, [Prompt("a b c", " d")], config, progress=False)
    assert chosen == [LEAN_POLICY if checkpointing else None]

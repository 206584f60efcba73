import warnings

import pytest
import torch

from lmrec.llm.finetune import FinetuneConfig, train_sft
from lmrec.llm.modes import ModeConfig, apply_mode
from lmrec.llm.prompts import Prompt
from lmrec.llm.resolve import load_llm
from lmrec.llm.scoring import score_token_candidates
from lmrec.llm.tokens import add_id_tokens
from lmrec.train.loop import Part, checkpoint_dirs, latest_checkpoint, read_state

EXAMPLES = [
    Prompt("User <u_0> has watched <i_1>. Candidates: <i_0>, <i_2>. Answer:", "<i_2>"),
    Prompt("User <u_1> has watched <i_2>. Candidates: <i_0>, <i_1>. Answer:", "<i_0>"),
    Prompt("User <u_1> has watched <i_0>. Candidates: <i_1>, <i_2>. Answer:", "<i_1>"),
]
CFG = FinetuneConfig(batch_size=2, epochs=2, lr=1e-2, lr_tokens=1e-1, warmup_steps=1)


def _fresh(mode="lora"):
    model, tok = load_llm("tiny-llama", device="cpu")
    ids = add_id_tokens(model, tok, 2, 3)
    torch.manual_seed(0)  # LoRA's A matrices start random
    return apply_mode(model, ModeConfig(mode=mode), ids, tok), tok, ids


def _scores(model, tok, ids):
    return score_token_candidates(
        model, tok, [e.text for e in EXAMPLES], ids.token_ids("item", torch.tensor([[0, 1, 2]] * 3))
    )


def test_save_then_load_gives_identical_scores(tmp_path):
    model, tok, ids = _fresh()
    stats = train_sft(model, tok, EXAMPLES, CFG, out_dir=tmp_path, progress=False)
    assert stats["steps"] == 4 and stats["samples_per_s"] > 0
    trained = _scores(model, tok, ids)
    again, tok2, ids2 = _fresh()
    assert not torch.equal(_scores(again, tok2, ids2), trained)
    ckpt = latest_checkpoint(tmp_path)
    assert read_state(ckpt)["step"] == 4
    Part("llm", again, trainable_only=True).load(ckpt)
    assert torch.equal(_scores(again, tok2, ids2), trained)
    assert (ckpt / "llm" / "trainable.safetensors").is_file()


def test_an_interrupted_run_resumes_to_the_same_weights_and_reports_the_same_loss(tmp_path):
    whole, tok, ids = _fresh()
    full = train_sft(whole, tok, EXAMPLES, CFG, progress=False)
    part, tok2, ids2 = _fresh()
    half = FinetuneConfig(**{**CFG.__dict__, "max_steps": 2})
    train_sft(part, tok2, EXAMPLES, half, out_dir=tmp_path, progress=False)
    resumed, tok3, ids3 = _fresh()
    stats = train_sft(resumed, tok3, EXAMPLES, CFG, out_dir=tmp_path, progress=False)
    assert stats["resumed_from"] == 2
    assert torch.allclose(_scores(resumed, tok3, ids3), _scores(whole, tok, ids), atol=1e-5)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-0000004"]  # keep_checkpoints=1
    # what a resumed run reports is what the same run reports uninterrupted
    assert stats["final_loss"] == pytest.approx(full["final_loss"], rel=1e-5)


def test_gradient_checkpointing_trains_to_the_same_weights():
    plain, tok, ids = _fresh()
    train_sft(plain, tok, EXAMPLES, CFG, progress=False)
    ckpt, tok2, ids2 = _fresh()
    with warnings.catch_warnings():  # through the transformers API that is not deprecated
        warnings.simplefilter("error", FutureWarning)
        train_sft(
            ckpt,
            tok2,
            EXAMPLES,
            FinetuneConfig(**{**CFG.__dict__, "gradient_checkpointing": True}),
            progress=False,
        )
    assert any(getattr(m, "gradient_checkpointing", False) for m in ckpt.modules())
    assert torch.allclose(_scores(ckpt, tok2, ids2), _scores(plain, tok, ids), atol=1e-4)


def test_resuming_with_another_computing_setting_is_refused(tmp_path):
    from lmrec.errors import ConfigError

    model, tok, _ = _fresh()
    half = FinetuneConfig(**{**CFG.__dict__, "max_steps": 2})
    train_sft(model, tok, EXAMPLES, half, out_dir=tmp_path, progress=False)
    other = FinetuneConfig(**{**CFG.__dict__, "lr": 5e-2})
    again, tok2, _ = _fresh()
    with pytest.raises(ConfigError, match=r"lr: 0.01 -> 0.05"):
        train_sft(again, tok2, EXAMPLES, other, out_dir=tmp_path, progress=False)


def test_a_negative_step_cap_is_a_config_error():
    from lmrec.errors import ConfigError

    with pytest.raises(ConfigError, match="train.max_steps"):
        FinetuneConfig(max_steps=-1)

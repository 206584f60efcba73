import numpy as np
import torch

from lmrec.llm.finetune import batch_loss
from lmrec.llm.prompts import Prompt, PromptBuilder, PromptConfig
from lmrec.llm.sft import (
    IGNORE,
    ExampleConfig,
    SFTCollator,
    answer_loss,
    encode_example,
    training_examples,
)
from lmrec.llm.tokens import add_id_tokens

TITLES = ["Heat", "Up", "Alien", "Big", "Jaws", "Rocky", "Fargo", "Brazil"]


def test_labels_mask_exactly_the_prompt(tiny):
    model, tok = tiny
    ids = add_id_tokens(model, tok, 3, 8)
    p = Prompt("User <u_1> has watched <i_2>. Answer:", "<i_5>")
    row = encode_example(tok, p)
    n_prompt = len(tok(p.text)["input_ids"])
    assert row["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert row["labels"][n_prompt:] == [ids.token_ids("item", 5), tok.eos_token_id]
    assert row["input_ids"][n_prompt:] == row["labels"][n_prompt:]


def test_collator_left_pads_and_the_loss_covers_answers_only(tiny):
    model, tok = tiny
    rows = [
        encode_example(tok, Prompt("User has watched", " Yes")),
        encode_example(tok, Prompt("User", " No")),
    ]
    batch = SFTCollator(tok.pad_token_id)(rows)
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    # the loss equals the mean NLL of the 4 answer tokens (2 answers + 2 EOS), by hand
    out = model(
        **{k: batch[k] for k in ("input_ids", "attention_mask")},
        position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp_min(0),
    )
    logp = torch.log_softmax(out.logits, -1)
    nll = []
    for b in range(2):
        for t in range(1, batch["labels"].shape[1]):
            if batch["labels"][b, t] != IGNORE:
                nll.append(-logp[b, t - 1, batch["labels"][b, t]])
    assert len(nll) == 4
    expected = torch.stack(nll).mean()
    assert torch.allclose(answer_loss(out.logits, batch["labels"]), expected, atol=1e-5)
    # the trainer computes only the answers' logits and gets the same number
    assert torch.allclose(batch_loss(model, batch), expected, atol=1e-5)


def test_training_examples_come_from_train_with_unseen_negatives(split):
    ids_cfg = PromptConfig()
    from lmrec.llm.tokens import IdTokens

    b = PromptBuilder(ids_cfg, TITLES, IdTokens(3, 8, 1000))
    ex = training_examples(split, b, ExampleConfig(n_candidates=4, targets_per_user=2, seed=0))
    # u0: targets items 1, 2 (history >= 1); u1: item 4; u2 has 1 train item -> none
    topk = [e for e in ex if e.answer.startswith("<i_")]
    assert [e.answer for e in topk] == ["<i_1>", "<i_2>", "<i_4>"]
    inter = [e for e in ex if not e.answer.startswith("<i_")]
    assert [e.answer for e in inter] == [" Yes", " No"] * 3
    for e in topk[:2]:  # user 0 never gets its own train items 0..2 as negatives
        listed = e.text.split("Candidates: ")[1]
        others = [int(s) for s in np.unique([t.split(">")[0] for t in listed.split("<i_")[1:]])]
        assert len(others) == 4 and not ({0, 1, 2} - {int(e.answer[3:-1])}) & set(others)
    # validation/test items never appear in a prompt's history
    assert all("<i_7> (Brazil), " not in e.text.split("Predict")[0] for e in ex)

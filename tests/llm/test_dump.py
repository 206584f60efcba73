"""`lmrec llm prompts`: the prompts as the LLM sees them, and the checks a reader makes on them."""

import json
import re

import numpy as np
import pytest

from lmrec.cli import main


def _slot(rec) -> int:
    return re.findall(r"<i_\d+>", rec["text"].rsplit("Candidates:", 1)[1]).index(rec["answer"])


def _records(tmp_path, split, task):
    out = tmp_path / f"{split}-{task}.jsonl"
    args = ["llm", "prompts", "ml-100k", "--split", split, "--task", task, "--out", str(out)]
    try:
        main([*args, "--sampler", "popularity"])
    except SystemExit as exc:
        if exc.code:
            raise
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
def test_train_and_test_prompts_share_no_answer_and_no_slot(tmp_path):
    from lmrec.protocol.prepare import prepare

    train = _records(tmp_path, "train", "topk")
    test = _records(tmp_path, "test", "topk")
    assert len(train) == 943 and len(test) == 943  # every user, once each
    prepared = prepare("ml-100k", candidates={"sampler": "popularity"})
    ds, split = prepared.dataset, prepared.split
    held = {}
    for frame in (split.valid, split.test):
        for u, j in zip(frame["user"], frame["item"], strict=True):
            held.setdefault(ds.users.raw[u], set()).add(ds.items.raw[j])
    by_user = {}
    for rec in train:
        assert rec["answer"] == f"<i_{ds.items.index(rec['target'])}>"
        assert rec["target"] == rec["candidates"][0] and len(set(rec["candidates"])) == 20
        # no validation or test item is a training target or a training negative
        assert not set(rec["candidates"]) & held[rec["user"]]
        by_user[rec["user"]] = _slot(rec)
    same = []
    for rec in test:
        history = rec["text"].split("Candidates:")[0]
        assert rec["answer"] not in history  # the test item is never in its own history
        same.append(by_user[rec["user"]] == _slot(rec))
    slots = np.bincount([_slot(r) for r in test], minlength=20)
    assert slots.min() > 20  # the positive's slot spreads over all 20 (943 / 20 = 47 each)
    assert np.mean(same) < 0.1  # a user's train and test answers do not share a slot


@pytest.mark.slow
def test_interaction_prompts_carry_their_label(tmp_path):
    recs = _records(tmp_path, "valid", "interaction")
    assert len(recs) == 2 * 943
    assert {r["answer"] for r in recs if r["label"] == 1} == {" Yes"}
    assert {r["answer"] for r in recs if r["label"] == 0} == {" No"}

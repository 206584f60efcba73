import numpy as np
import pytest

from lmrec.config import from_dict
from lmrec.errors import ConfigError
from lmrec.llm.prompts import PromptBuilder, PromptConfig, get_template, load_templates
from lmrec.llm.tokens import IdTokens

TITLES = ["Heat", "Up", "Alien", "Big", "Jaws", "Rocky", "Fargo", "Brazil"]

IDS = IdTokens(n_users=3, n_items=8, first_id=100)


def test_interaction_prompt_matches_the_paper_layout():
    b = PromptBuilder(PromptConfig(), TITLES, IDS)
    p = b.prompt("interaction", 1, [0, 2], target=4, label=1)
    assert p.text == (
        "User <u_1> has watched the following movies <i_0> (Heat), <i_2> (Alien). "
        "Predict if he/she will watch <i_4> (Jaws) next. Answer:"
    )
    assert p.answer == " Yes"
    assert b.prompt("interaction", 1, [0, 2], target=4, label=0).answer == " No"


def test_history_is_capped_to_the_most_recent_items():
    b = PromptBuilder(PromptConfig(max_history=2), TITLES, IDS)
    text = b.prompt("interaction", 0, [0, 1, 2, 3], target=5, label=1).text
    assert "<i_2> (Alien), <i_3> (Big)." in text and "<i_0>" not in text and "<i_1> " not in text


def test_topk_candidates_are_shuffled_with_a_seed_and_the_answer_is_the_positive():
    b = PromptBuilder(PromptConfig(seed=1), TITLES, IDS)
    cands = [7, 0, 1, 2, 3, 4, 5, 6]
    p = b.prompt("topk", 2, [1], candidates=cands)
    assert p.answer == "<i_7>"
    listed = p.text.split("Candidates: ")[1].removesuffix(". Answer:").split(", ")
    order = [int(s.split(">")[0].removeprefix("<i_")) for s in listed]
    assert sorted(order) == sorted(cands) and order != cands
    assert b.prompt("topk", 2, [1], candidates=cands).text == p.text  # same seed, same text
    firsts = {
        PromptBuilder(PromptConfig(seed=s), TITLES, IDS).candidate_order(2, 8, 7)[0]
        for s in range(8)
    }
    assert len(firsts) > 1  # the positive's place changes with the seed


def _positive_slot(builder, user, target, negatives):
    text = builder.prompt("topk", user, [0], candidates=[target, *negatives]).text
    listed = text.split("Candidates: ")[1].removesuffix(". Answer:").split(", ")
    return [s.split(">")[0] for s in listed].index(f"<i_{target}")


def test_positive_slot_is_uniform_and_differs_between_a_users_targets():
    """The leak a (seed, user) shuffle had: a user's positive in one slot in every prompt."""
    titles = [f"t{j}" for j in range(40)]
    ids = IdTokens(n_users=200, n_items=40, first_id=1000)
    b = PromptBuilder(PromptConfig(), titles, ids)
    negs = list(range(20, 39))
    # one user, the 20 targets a training run could use: the slot is not fixed per user
    slots_one_user = {_positive_slot(b, 3, target, negs) for target in range(20)}
    assert len(slots_one_user) >= 8
    # many users, same target: slots spread over all 20 (chi-square vs uniform, 2000 prompts)
    counts = np.bincount([_positive_slot(b, u, 5, negs) for u in range(200)], minlength=20)
    counts += np.bincount(
        [_positive_slot(b, u % 200, 6 + u // 200, negs) for u in range(1800)], minlength=20
    )
    expected = counts.sum() / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8  # 19 degrees of freedom, p = 0.001
    # the same user's train (target 5) and test (target 6) prompts: slots agree only by chance
    same = np.mean(
        [_positive_slot(b, u, 5, negs) == _positive_slot(b, u, 6, negs) for u in range(200)]
    )
    assert same < 0.15


def test_text_only_templates_use_titles_only():
    cfg = PromptConfig(topk="text-topk", interaction="text-interaction")
    b = PromptBuilder(cfg, TITLES, None)
    p = b.prompt("topk", 0, [0, 1], candidates=[2, 3])
    assert "<" not in p.text and '"Alien"' in p.text and p.answer == " Alien"
    assert not cfg.template("topk").uses_ids
    with pytest.raises(ConfigError, match="uses user/item tokens"):
        PromptBuilder(PromptConfig(), TITLES, None)


def test_chat_mode_wraps_in_the_chat_template_without_a_leading_space(tiny):
    _, tok = tiny
    b = PromptBuilder(PromptConfig(chat=True), TITLES, IDS, tok)
    p = b.prompt("interaction", 0, [1], target=2, label=1)
    assert p.answer == "Yes"
    assert p.text != b.instruction("interaction", 0, [1], target=2)
    assert "Predict if he/she will watch <i_2> (Alien) next. Answer:" in p.text


def test_bad_templates_are_rejected_with_the_field_named(tmp_path):
    with pytest.raises(ConfigError, match="answer"):
        get_template(
            {"task": "interaction", "instruction": "{target}", "item": "{title}", "answer": "title"}
        )
    with pytest.raises(ConfigError, match="must contain {candidates}"):
        get_template(
            {"task": "topk", "instruction": "x", "item": "{token}", "answer": "item_token"}
        )
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(PromptConfig, {"max_histroy": 3})
    path = tmp_path / "t.yaml"
    path.write_text(
        "mine:\n  task: topk\n  instruction: 'Pick: {candidates}. Answer:'\n"
        "  item: '{title}'\n  answer: title\n"
    )
    assert load_templates(path)["mine"].answer == "title"

"""Rendering prompts from templates (:mod:`lmrec.llm.templates`) for users, histories and items.

Prompts are plain text by default, ending in ``Answer:``; the answer follows directly (" Yes",
"<i_48>"), as in the paper and as SFT learns it. ``chat=True`` wraps the instruction in the
tokenizer's chat template instead (what an instruct model expects zero-shot, e.g. LLM-Rec); the
answer then starts the assistant turn without a leading space.

Candidate order inside a top-K prompt is shuffled with a seed per (seed, user, target item): the
positive (column 0 of every candidate set) lands in a uniformly random slot, a rerun writes the
same prompt, and a user's training prompts (other targets) do not share their positive's slot
with that user's test prompt. Seeding by (seed, user) alone put a user's positive in the same slot
in every prompt, a position leak as soon as training sees the user. Only the most recent
``max_history`` items are shown, oldest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmrec.config import from_dict, load_file
from lmrec.errors import ConfigError
from lmrec.llm.templates import DOMAINS, TEMPLATES
from lmrec.llm.tokens import IdTokens

ANSWERS = {"interaction": ("yes_no",), "topk": ("item_token", "title")}


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt format; see :mod:`lmrec.llm.templates` for the fields."""

    task: str
    instruction: str
    item: str
    answer: str
    user: str = "{token}"
    sep: str = ", "
    yes: str = "Yes"
    no: str = "No"

    def __post_init__(self) -> None:
        if self.task not in ANSWERS:
            raise ConfigError(f"template.task must be one of {tuple(ANSWERS)}, got {self.task!r}")
        if self.answer not in ANSWERS[self.task]:
            raise ConfigError(
                f"template.answer {self.answer!r} does not fit task {self.task!r}; "
                f"use one of {ANSWERS[self.task]}"
            )
        needed = "{target}" if self.task == "interaction" else "{candidates}"
        if needed not in self.instruction:
            raise ConfigError(
                f"template.instruction of a {self.task} template must contain {needed}"
            )
        if self.answer == "item_token" and "{token}" not in self.item:
            raise ConfigError("template.item must contain {token} when the answer is an item token")

    @property
    def uses_ids(self) -> bool:
        """Whether the prompt needs user/item tokens (False: text only, ablation w/o ET)."""
        return "{token}" in self.item or ("{user}" in self.instruction and "{token}" in self.user)


def get_template(name_or_mapping: str | dict) -> PromptTemplate:
    """A built-in template by name, or one given as a mapping (from YAML)."""
    if isinstance(name_or_mapping, dict):
        return from_dict(PromptTemplate, name_or_mapping, "template")
    if name_or_mapping not in TEMPLATES:
        raise ConfigError(
            f"unknown prompt template {name_or_mapping!r}; choose one of {', '.join(TEMPLATES)} "
            "or give the template's fields as a mapping"
        )
    return from_dict(PromptTemplate, TEMPLATES[name_or_mapping], f"template {name_or_mapping}")


def load_templates(path: str | Path) -> dict[str, PromptTemplate]:
    """Templates from a YAML/JSON file: ``{name: {task, instruction, item, answer, ...}}``."""
    return {
        name: from_dict(PromptTemplate, t, f"{path}: {name}") for name, t in load_file(path).items()
    }


@dataclass
class PromptConfig:
    """How prompts are written.

    Attributes
    ----------
    domain:
        Key of :data:`lmrec.llm.templates.DOMAINS` (``movies``, ``products``, ``items``).
    max_history:
        Most recent items shown (the rest of the history is cut).
    max_title_chars:
        Longer titles are cut (Amazon titles can run to hundreds of characters).
    chat:
        Wrap instructions in the tokenizer's chat template.
    seed:
        Candidate-order shuffling seed.
    """

    topk: str | dict = "bdlm-topk"
    interaction: str | dict = "bdlm-interaction"
    domain: str = "movies"
    max_history: int = 10
    max_title_chars: int = 80
    chat: bool = False
    seed: int = 0
    words: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ConfigError(f"prompt.domain must be one of {tuple(DOMAINS)}, got {self.domain!r}")
        if self.max_history < 1:
            raise ConfigError(f"prompt.max_history must be >= 1, got {self.max_history}")
        for task in ANSWERS:
            if get_template(getattr(self, task)).task != task:
                raise ConfigError(f"prompt.{task} names a template of another task")

    def template(self, task: str) -> PromptTemplate:
        return get_template(getattr(self, task))


@dataclass
class Prompt:
    """A rendered prompt and (for training) its answer text."""

    text: str
    answer: str = ""


# How a prompt names a user without an id ("User without an id has watched ...").
NEW_USER = "without an id"


class PromptBuilder:
    """Renders prompts of one configuration for one dataset's titles and tokens."""

    def __init__(
        self, config: PromptConfig, titles: Sequence[str], ids: IdTokens | None, tokenizer=None
    ) -> None:
        self.config = config
        self.titles = [t[: config.max_title_chars] for t in titles]
        self.ids = ids
        self.tokenizer = tokenizer
        self.words = {**DOMAINS[config.domain], **config.words}
        for task in ANSWERS:
            if config.template(task).uses_ids and ids is None:
                raise ConfigError(
                    f"prompt.{task}: template uses user/item tokens but the model has none; "
                    "use a text-* template or add tokens (id_tokens: true)"
                )

    # --- pieces
    def item(self, template: PromptTemplate, j: int) -> str:
        token = self.ids.item_token(j) if self.ids is not None else ""
        return template.item.format(token=token, title=self.titles[j])

    def user(self, template: PromptTemplate, u: int) -> str:
        if u < 0:  # a user the model has no token for (a served history-only request)
            return NEW_USER
        token = self.ids.user_token(u) if self.ids is not None else ""
        return template.user.format(token=token)

    def candidate_order(self, user: int, n: int, target: int) -> np.ndarray:
        """The seeded permutation of a prompt's candidates, ``target`` being the positive."""
        key = int(user) % 2**32  # a user without an id (-1) has a stream of their own
        return np.random.default_rng([self.config.seed, key, int(target)]).permutation(n)

    # --- whole prompts
    def instruction(
        self,
        task: str,
        user: int,
        history: Sequence[int],
        target: int | None = None,
        candidates: Sequence[int] | None = None,
    ) -> str:
        t = self.config.template(task)
        recent = list(history)[-self.config.max_history :]
        fields = dict(self.words)
        fields["user"] = self.user(t, user)
        fields["history"] = t.sep.join(self.item(t, j) for j in recent) or "nothing yet"
        if task == "interaction":
            fields["target"] = self.item(t, int(target))
        else:
            cands = np.asarray(candidates)
            order = self.candidate_order(user, len(cands), int(cands[0]))
            fields["candidates"] = t.sep.join(self.item(t, int(j)) for j in cands[order])
        return t.instruction.format(**fields)

    def answer(self, task: str, item: int | None = None, label: int | None = None) -> str:
        """The answer text that follows the prompt (leading space in plain-text mode)."""
        t = self.config.template(task)
        space = "" if self.config.chat else " "
        if t.answer == "yes_no":
            return space + (t.yes if label else t.no)
        if t.answer == "item_token":
            return self.ids.item_token(int(item))  # the token strips the space on its left
        return space + self.titles[int(item)]

    def wrap(self, instruction: str, shots: Sequence[Prompt] = ()) -> str:
        """Plain text (few-shot examples first, blank-line separated) or the chat template."""
        if not self.config.chat:
            return "".join(f"{s.text}{s.answer}\n\n" for s in shots) + instruction
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("prompt.chat=true needs a tokenizer with a chat template")
        messages = []
        for s in shots:
            messages += [
                {"role": "user", "content": s.text},
                {"role": "assistant", "content": s.answer.strip()},
            ]
        messages.append({"role": "user", "content": instruction})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def prompt(
        self,
        task: str,
        user: int,
        history: Sequence[int],
        target: int | None = None,
        candidates: Sequence[int] | None = None,
        label: int | None = None,
        shots: Sequence[Prompt] = (),
    ) -> Prompt:
        """Render one prompt; for top-K the answer is the candidate in column 0 (the positive)."""
        text = self.wrap(self.instruction(task, user, history, target, candidates), shots)
        if task == "topk":
            return Prompt(text, self.answer(task, item=int(np.asarray(candidates)[0])))
        return Prompt(text, self.answer(task, item=target, label=label))


def histories(frame, n_users: int) -> list[np.ndarray]:
    """Chronological item indices per user from a frame sorted by (user, timestamp)."""
    users = frame["user"].to_numpy()
    items = frame["item"].to_numpy()
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(n_users)]

"""Prompt templates as data (BDLM Table 2), plus the words that change with the domain.

Each template is a plain mapping; :class:`lmrec.llm.prompts.PromptTemplate` validates it. Fields
of ``instruction``: ``{user}`` (the user, written by ``user``), ``{history}`` (the most recent
items, oldest first, each written by ``item`` and joined by ``sep``), ``{target}`` (the item asked
about, interaction prediction), ``{candidates}`` (the shuffled candidates, top-K) and the domain
words ``{done}``, ``{do}``, ``{noun}``, ``{noun_one}``. Item fields: ``{token}`` (``<i_j>``) and
``{title}``. ``answer`` is ``yes_no``, ``item_token`` or ``title``.

Users can add their own in a YAML file with the same keys
(:func:`lmrec.llm.prompts.load_templates`).
"""

from __future__ import annotations

_HISTORY = "User {user} has {done} the following {noun} {history}."
_TEXT_HISTORY = "The user has {done} the following {noun} {history}."
_INTERACTION = " Predict if he/she will {do} {target} next. Answer:"
_TOPK = (
    " Predict which 1 {noun_one} in candidate set will he/she {do} most probably?"
    " Candidates: {candidates}. Answer:"
)

TEMPLATES: dict[str, dict] = {
    # BDLM Table 2: ID tokens with titles; answers "Yes"/"No" and an item token
    "bdlm-interaction": {
        "task": "interaction",
        "instruction": _HISTORY + _INTERACTION,
        "item": "{token} ({title})",
        "answer": "yes_no",
    },
    "bdlm-topk": {
        "task": "topk",
        "instruction": _HISTORY + _TOPK,
        "item": "{token} ({title})",
        "answer": "item_token",
    },
    # pure ID prompts (the SPEC probe): no titles at all
    "id-interaction": {
        "task": "interaction",
        "instruction": _HISTORY + _INTERACTION,
        "item": "{token}",
        "answer": "yes_no",
    },
    "id-topk": {
        "task": "topk",
        "instruction": _HISTORY + _TOPK,
        "item": "{token}",
        "answer": "item_token",
    },
    # text only (InstructRec, LLM-Rec, ablation w/o ET): titles, no new tokens
    "text-interaction": {
        "task": "interaction",
        "instruction": _TEXT_HISTORY + _INTERACTION,
        "item": '"{title}"',
        "answer": "yes_no",
    },
    "text-topk": {
        "task": "topk",
        "instruction": _TEXT_HISTORY + _TOPK,
        "item": '"{title}"',
        "answer": "title",
    },
}

DOMAINS: dict[str, dict[str, str]] = {
    "movies": {"done": "watched", "do": "watch", "noun": "movies", "noun_one": "movie"},
    "products": {"done": "bought", "do": "buy", "noun": "products", "noun_one": "product"},
    "items": {"done": "interacted with", "do": "choose", "noun": "items", "noun_one": "item"},
}

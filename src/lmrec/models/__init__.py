"""Domain recommenders behind one contract (:class:`Recommender`) and an explicit registry.

Example::

    model = build_model("lightgcn", n_users, n_items, {"dim": 64, "n_layers": 3})
    model.prepare(train_users, train_items)  # LightGCN's graph, popularity's counts

Every model is built as ``Model(n_users, n_items, config)`` from its dataclass config;
:func:`build_model` checks the config's keys, so a typo raises instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lmrec.config import from_dict
from lmrec.errors import ConfigError
from lmrec.models.base import Recommender
from lmrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from lmrec.models.gmf import GMF, GMFConfig
from lmrec.models.gpt4sm import GPT4SM, GPT4SMConfig
from lmrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from lmrec.models.lightgcn import LightGCN, LightGCNConfig
from lmrec.models.mf import MF, MFConfig
from lmrec.models.neumf import NeuMF, NeuMFConfig
from lmrec.models.popularity import Popularity, PopularityConfig
from lmrec.models.sasrec import SASRec, SASRecConfig
from lmrec.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its class and the dataclass config it is built from."""

    model: type[Recommender]
    config: type
    # tensors the model is built from besides its config (GPT4SM: an LLM's features), passed
    # to build_model by name; models with inputs cannot be trained by `lmrec train` alone
    inputs: tuple[str, ...] = ()


MODELS: Registry[ModelEntry] = Registry("model")
MODELS.add("popularity", ModelEntry(Popularity, PopularityConfig))
MODELS.add("mf", ModelEntry(MF, MFConfig))
MODELS.add("gmf", ModelEntry(GMF, GMFConfig))
MODELS.add("neumf", ModelEntry(NeuMF, NeuMFConfig))
MODELS.add("lightgcn", ModelEntry(LightGCN, LightGCNConfig))
MODELS.add("sasrec", ModelEntry(SASRec, SASRecConfig))
MODELS.add("gru4rec", ModelEntry(GRU4Rec, GRU4RecConfig))
MODELS.add("bert4rec", ModelEntry(BERT4Rec, BERT4RecConfig))
MODELS.add("gpt4sm", ModelEntry(GPT4SM, GPT4SMConfig, inputs=("user_feats", "item_feats")))


def model_config_class(name: str) -> type:
    """The dataclass config of registered model ``name`` (unknown names raise ConfigError)."""
    return MODELS.get(name).config


def build_model(
    name: str,
    n_users: int,
    n_items: int,
    config: dict[str, Any] | Any | None = None,
    **inputs: Any,
) -> Recommender:
    """Build registered model ``name`` for ``n_users`` users and ``n_items`` items.

    Parameters
    ----------
    name:
        A name in ``MODELS`` (``"mf"``, ``"lightgcn"``, ``"sasrec"``, ...).
    n_users, n_items:
        Sizes of the dataset's dense id ranges.
    config:
        A dict of config fields (missing ones take their defaults; unknown keys raise
        :class:`~lmrec.errors.ConfigError` naming the key), an instance of the model's config
        class, or None for all defaults.
    inputs:
        The tensors a model is built from besides its config (``ModelEntry.inputs``).
    """
    entry = MODELS.get(name)
    if set(inputs) != set(entry.inputs):
        if entry.inputs and not inputs:
            raise ConfigError(
                f"model {name!r} is built from {', '.join(entry.inputs)} (an LLM's features), "
                "not from ids alone: run it as an experiment cell of kind 'gpt4sm'"
            )
        raise TypeError(f"model {name!r} takes inputs {entry.inputs}, got {tuple(inputs)}")
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        if not isinstance(config, entry.config):
            raise TypeError(
                f"model {name!r} takes a {entry.config.__name__}, got {type(config).__name__}"
            )
        cfg = config
    else:
        cfg = from_dict(entry.config, config, where=f"model.{name}")
    if n_users < 1 or n_items < 1:
        raise ValueError(f"need at least one user and one item, got {n_users} and {n_items}")
    return entry.model(n_users, n_items, cfg, **inputs)


__all__ = [
    "BERT4Rec",
    "BERT4RecConfig",
    "GMF",
    "GMFConfig",
    "GPT4SM",
    "GPT4SMConfig",
    "GRU4Rec",
    "GRU4RecConfig",
    "LightGCN",
    "LightGCNConfig",
    "MF",
    "MFConfig",
    "MODELS",
    "ModelEntry",
    "NeuMF",
    "NeuMFConfig",
    "Popularity",
    "PopularityConfig",
    "Recommender",
    "SASRec",
    "SASRecConfig",
    "build_model",
    "model_config_class",
]

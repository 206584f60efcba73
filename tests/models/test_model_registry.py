"""The model registry and build_model: names, configs, and clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lmrec.errors import ConfigError
from lmrec.models import MODELS, Recommender, build_model, model_config_class

ALL = ["bert4rec", "gmf", "gru4rec", "lightgcn", "mf", "neumf", "popularity", "sasrec"]
FROM_FEATURES = ["gpt4sm"]  # built from an LLM's features, not from ids alone


def test_all_models_are_registered_with_a_dataclass_config():
    assert MODELS.names() == sorted(ALL + FROM_FEATURES)
    for name in ALL:
        assert dataclasses.is_dataclass(model_config_class(name))
        model = build_model(name, 3, 5)
        assert isinstance(model, Recommender)
        assert model.batch_kind in ("pairwise", "pointwise", "sequence", "none")
        assert isinstance(model.config, model_config_class(name))


@pytest.mark.parametrize("name", [n for n in ALL if n != "popularity"])
def test_dim_is_configurable(name):
    model = build_model(
        name, 3, 5, {"dim": 12} if name not in ("sasrec", "bert4rec") else {"dim": 12, "n_heads": 1}
    )
    assert model.config.dim == 12
    model.prepare(np.array([0, 1]), np.array([0, 4]))  # LightGCN needs its graph
    assert model.user_item_embeddings()[1].shape == (5, 12)


def test_unknown_key_and_bad_value_raise_naming_the_field():
    with pytest.raises(ConfigError, match="unknown key.*dimm"):
        build_model("mf", 3, 5, {"dimm": 8})
    with pytest.raises(ConfigError, match="n_layers"):
        build_model("lightgcn", 3, 5, {"n_layers": -1})
    with pytest.raises(ConfigError, match="divisible by n_heads"):
        build_model("sasrec", 3, 5, {"dim": 10, "n_heads": 3})
    with pytest.raises(ConfigError, match="dropout"):
        build_model("neumf", 3, 5, {"dropout": 1.5})
    with pytest.raises(ConfigError, match="unknown model 'nope'.*lightgcn"):
        build_model("nope", 3, 5)


def test_config_lists_from_json_become_tuples():
    model = build_model("neumf", 3, 5, {"mlp_hidden": [16, 8]})
    assert model.config.mlp_hidden == (16, 8)


def test_a_config_instance_is_accepted():
    cfg = model_config_class("mf")(dim=4)
    assert build_model("mf", 3, 5, cfg).config is cfg
    with pytest.raises(TypeError, match="MFConfig"):
        build_model("lightgcn", 3, 5, cfg)


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        MODELS.add("mf", MODELS.get("mf"))


def test_a_model_built_from_features_says_so_when_they_are_missing():
    with pytest.raises(ConfigError, match="gpt4sm.*user_feats, item_feats.*kind 'gpt4sm'"):
        build_model("gpt4sm", 3, 5)
    import torch

    model = build_model(
        "gpt4sm", 3, 5, {"dim": 4}, user_feats=torch.randn(3, 6), item_feats=torch.randn(5, 6)
    )
    assert model.user_item_embeddings()[1].shape == (5, 4)

"""The experiment config: typed sections, unknown keys named by their dotted path."""

from pathlib import Path

import pytest

from lmrec.errors import ConfigError
from lmrec.experiment.config import experiment_from_dict, load_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE = {"name": "x", "datasets": ["ml-100k"], "methods": [{"name": "mf"}]}


def test_defaults_and_shorthand():
    cfg = experiment_from_dict(
        {
            **BASE,
            "datasets": ["ml-100k", {"name": "atomic:/data/shop", "preprocess": {"user_core": 5}}],
        }
    )
    assert [d.label for d in cfg.datasets] == ["ml-100k", "shop"]  # a spec string: its file stem
    assert cfg.datasets[1].preprocess == {"user_core": 5}
    m = cfg.methods[0]
    assert (m.kind, m.model, m.label, cfg.seeds, cfg.isolate) == ("domain", "mf", "mf", [0], True)


def test_unknown_key_names_the_dotted_path(tmp_path):
    bad = {**BASE, "methods": [{"name": "mf"}, {"name": "gmf", "train_confg": {"epochs": 1}}]}
    with pytest.raises(ConfigError, match=r"experiment\.methods\[1\].*train_confg"):
        experiment_from_dict(bad)
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ndatasets: [ml-100k]\nmethods: [{name: mf}]\nablation: {metrc: F1}\n")
    with pytest.raises(
        ConfigError, match=r"exp\.yaml: experiment\.ablation: unknown key\(s\) metrc"
    ):
        load_experiment(path)
    with pytest.raises(ConfigError, match=r"experiment: unknown key\(s\) seed\b"):
        experiment_from_dict({**BASE, "seed": 1})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seeds": []}, "seeds must be a non-empty list"),
        ({"seeds": [0, 0]}, "seeds: duplicated 0"),
        ({"methods": [{"name": "mf"}, {"name": "mf"}]}, r"methods \(names\): duplicated mf"),
        ({"methods": [{"name": "a b"}]}, r"methods\[0\].*folder-safe"),
        ({"methods": [{"model": "mf"}]}, r"methods\[0\]: missing required key 'name'"),
        ({"ablation": {"methods": ["mf", "nope"]}}, "ablation.methods: nope not among"),
        ({"lambda_sweep": {"methods": ["mf"], "lambdas": [0, 1]}}, "1 methods but 2 lambdas"),
        (
            {"lambda_sweep": {"methods": ["mf"], "lambdas": [0], "series": {"x": ["mf", "mf"]}}},
            r"\(x\): 2 methods but 1 lambdas",
        ),
        (
            {"lambda_sweep": {"methods": ["mf"], "lambdas": [0], "series": {"x": ["nope"]}}},
            "lambda_sweep.methods: nope not among",
        ),
        (
            {"methods": [{"name": "mf", "per_dataset": {"ml-1m": {"train_config": {}}}}]},
            r"per_dataset: ml-1m not among the dataset labels \(ml-100k\)",
        ),
        (
            {"methods": [{"name": "mf", "per_dataset": {"ml-100k": {"train": {}}}}]},
            r"methods\[0\]: per_dataset.ml-100k: unknown key\(s\) train",
        ),
    ],
)
def test_bad_values_raise(change, message):
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict({**BASE, **change})


@pytest.mark.parametrize("name", ["baselines.yaml", "smoke.yaml"])
def test_shipped_configs_are_valid(name):
    from lmrec.config import from_dict
    from lmrec.experiment.runner import expand
    from lmrec.models import model_config_class
    from lmrec.train.trainer import TrainConfig

    cfg = load_experiment(CONFIGS / name)
    for cell in expand(cfg):  # every cell's configs build, so no typo waits hours to raise
        from_dict(TrainConfig, cell.method.train_config, cell.id)
        from_dict(model_config_class(cell.method.model), cell.method.model_config, cell.id)
    if name == "baselines.yaml":
        models = {"popularity", "mf", "gmf", "neumf", "lightgcn", "sasrec", "gru4rec", "bert4rec"}
        assert {m.model for m in cfg.methods} == models
        assert [d.name for d in cfg.datasets] == ["ml-100k", "ml-1m"]
        assert cfg.candidates["sampler"] == "mixed"

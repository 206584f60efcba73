from dataclasses import dataclass, field

import pytest

from lmrec.config import from_dict, load_file, to_dict
from lmrec.errors import ConfigError
from lmrec.registry import Registry


@dataclass
class Inner:
    seed: int = 0


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)


def test_from_dict_builds_nested_configs():
    cfg = from_dict(Outer, {"name": "y", "inner": {"seed": 3}})
    assert cfg == Outer("y", Inner(3))
    assert to_dict(cfg) == {"name": "y", "inner": {"seed": 3}}


def test_unknown_key_names_its_dotted_path():
    with pytest.raises(ConfigError, match=r"config\.inner: unknown key\(s\) sede"):
        from_dict(Outer, {"inner": {"sede": 3}})


def test_load_file_rejects_bad_yaml(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_file(tmp_path / "missing.yaml")


def test_registry_rejects_duplicates_and_lists_choices():
    reg: Registry[int] = Registry("model")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)
    with pytest.raises(ConfigError, match="choose one of: a"):
        reg.get("b")
    assert reg.get("a") == 1 and reg.names() == ["a"]


def test_fields_that_may_change_on_resume_are_marked_on_the_config_classes():
    from lmrec.bdlm.config import JointConfig
    from lmrec.config import resumable_fields
    from lmrec.llm.finetune import FinetuneConfig
    from lmrec.train.trainer import TrainConfig

    assert resumable_fields(TrainConfig) == {"epochs", "device", "num_threads", "progress"}
    assert resumable_fields(FinetuneConfig) == {
        "epochs", "max_steps", "save_every", "keep_checkpoints", "gradient_checkpointing",
        "accumulation_steps",
    }  # fmt: skip
    assert resumable_fields(JointConfig) == {"epochs", "progress", "num_threads", "save_every"}

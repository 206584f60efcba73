"""The one "same run" rule of run folders."""

import json

import pytest

from lmrec.errors import ConfigError
from lmrec.train.rundir import check_same_run, config_diff


def test_config_diff_names_every_differing_dotted_key():
    saved = {"a": 1, "train": {"lr": 0.1, "epochs": 2}, "gone": True}
    new = {"a": 1, "train": {"lr": 0.2, "epochs": 2}, "added": "x"}
    assert config_diff(saved, new) == [
        "added: (none) -> 'x'",
        "gone: True -> (none)",
        "train.lr: 0.1 -> 0.2",
    ]
    assert config_diff(saved, saved) == []


def test_check_same_run_compares_the_kind_s_view_only(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"train": {"lr": 0.1, "epochs": 2}}))

    def view(config):  # epochs may change on resume
        return {"train": {k: v for k, v in config["train"].items() if k != "epochs"}}

    check_same_run(tmp_path, {"train": {"lr": 0.1, "epochs": 9}}, view, "toy run")
    with pytest.raises(
        ConfigError, match=r"config.json: .* holds a toy run .*train.lr: 0.1 -> 0.3"
    ):
        check_same_run(tmp_path, {"train": {"lr": 0.3, "epochs": 2}}, view, "toy run")
    check_same_run(tmp_path / "new", {"anything": 1}, view)  # a new folder: nothing to check

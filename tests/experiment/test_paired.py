"""The report's intervals and paired tests, from per-user rank files as cells write them."""

import numpy as np
import pytest

from lmrec.eval.significance import RANKS_FILE, write_ranks
from lmrec.experiment.cell import RUN_DIR
from lmrec.experiment.config import experiment_from_dict
from lmrec.experiment.grid import cell_dir, expand
from lmrec.experiment.paired import (
    DOMAIN_RANKS_FILE,
    collect_ranks,
    paired_markdown,
    paired_results,
)


def _config(reference=None):
    data = {
        "name": "paired",
        "seeds": [0, 1],
        "datasets": ["ml-100k"],
        "methods": [
            {"name": "popularity"},
            {"name": "lightgcn", "label": "LightGCN"},
            {"name": "bdlm-drs", "label": "BDLM-drs", "kind": "bdlm", "model": "tiny-llama"},
        ],
    }
    if reference:
        data["reference"] = reference
    return experiment_from_dict(data)


def test_rows_are_paired_with_the_reference_on_the_same_seed_and_user(tmp_path):
    cfg = _config()
    assert cfg.reference_method() == "lightgcn"  # the first domain model other than popularity
    users = np.arange(50)
    for cell in expand(cfg):
        run = cell_dir(tmp_path, cell) / RUN_DIR
        run.mkdir(parents=True)
        if cell.method.name == "lightgcn":  # right on users 0-9 in both seeds
            write_ranks(run / RANKS_FILE, users, np.where(users < 10, 1, 4), 20)
        elif cell.method.name == "bdlm-drs":  # right on users 0-19; its domain model on 0-9
            write_ranks(run / RANKS_FILE, users, np.where(users < 20, 1, 2), 20)
            write_ranks(run / DOMAIN_RANKS_FILE, users, np.where(users < 10, 1, 3), 20)
        # popularity wrote nothing: it is left out
    ranks = collect_ranks(cfg, tmp_path)
    assert set(ranks["ml-100k"]) == {"lightgcn", "bdlm-drs", "bdlm-drs · domain alone"}
    rows = {r["method"]: r for r in paired_results(cfg, ranks)["ml-100k"]}
    drs = rows["bdlm-drs"]
    assert drs["users"] == 100 and drs["seeds"] == 2 and drs["hr"] == pytest.approx(0.4)
    assert drs["low"] < 0.4 < drs["high"]
    vs = drs["vs"]
    assert vs["diff"] == pytest.approx(0.2) and vs["only_a"] == 20 and vs["only_b"] == 0
    assert vs["p"] == pytest.approx(2 / 2**20)
    assert rows["bdlm-drs · domain alone"]["vs"]["diff"] == 0
    assert "vs" not in rows["lightgcn"]
    text = paired_markdown(cfg, {"ml-100k": list(rows.values())})
    assert "| BDLM-drs | 100 | 0.400 [" in text and "2.00x" in text and "20 / 0" in text


def test_an_unknown_reference_is_a_config_error():
    from lmrec.errors import ConfigError

    with pytest.raises(ConfigError, match="experiment.reference"):
        _config(reference="sasrec")

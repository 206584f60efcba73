"""configs/smoke.yaml end to end: real data, real training, isolated cells, the report."""

import json
from pathlib import Path

import pytest

from lmrec.experiment.runner import run_experiment

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


@pytest.mark.slow
def test_smoke_config_end_to_end(tmp_path):
    report = run_experiment(SMOKE, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert [c["status"] for c in results["cells"]] == ["finished", "finished"]
    assert results["stats"]["ml-100k"]["users"] == 943
    pop = results["metrics"]["ml-100k"]["popularity"]
    for key in ("topk/HR@1", "interaction/F1", "full/NDCG@10"):
        assert 0 < pop[key]["mean"] < 1
    assert results["metrics"]["ml-100k"]["mf"]["train/epochs"]["mean"] == 1
    text = report.read_text()
    assert "| method | ml-100k HR@1 | ml-100k HR@2 | ml-100k prec |" in text
    assert "| Popularity |" in text and "| MF/BPR |" in text
    assert (tmp_path / "hr1.png").read_bytes()[:4] == b"\x89PNG"
    cell = json.loads((tmp_path / "cells/ml-100k/mf/seed-0/cell.json").read_text())
    assert cell["attempts"][0]["peak_rss_scope"] == "cell process" and cell["peak_rss_mb"] > 50
    # Everything finished: a second run trains nothing and leaves the metrics as they were.
    before = (tmp_path / "cells/ml-100k/mf/seed-0/metrics.json").read_text()
    run_experiment(SMOKE, tmp_path)
    assert json.loads((tmp_path / "cells/ml-100k/mf/seed-0/cell.json").read_text()) == cell
    assert (tmp_path / "cells/ml-100k/mf/seed-0/metrics.json").read_text() == before

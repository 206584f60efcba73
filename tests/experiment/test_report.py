"""Aggregation over seeds (hand-checked), the report's tables, results files and charts."""

import csv
import json

import pytest

from lmrec.experiment.charts import plot_ablation, plot_lambda_curve
from lmrec.experiment.results import mean_std
from lmrec.experiment.runner import run_experiment

PNG = b"\x89PNG\r\n\x1a\n"


def test_mean_std_by_hand():
    agg = mean_std([0.2, 0.3, 0.4])
    assert agg["mean"] == pytest.approx(0.3)
    # sample std: sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    assert agg["std"] == pytest.approx(0.1)
    assert mean_std([0.5]) == {"mean": 0.5, "std": None, "n": 1, "values": [0.5]}
    assert mean_std([float("nan"), 1.0])["n"] == 1


@pytest.fixture
def finished(fake, tmp_path):
    cfg = fake.config(
        ablation={"methods": ["b", "a"]},
        lambda_sweep={
            "methods": ["a", "b"],
            "lambdas": [0, 0.1],
            "label": "first",
            "series": {"second": ["b", "a"]},
        },
    )
    report = run_experiment(cfg, tmp_path)
    return tmp_path, report.read_text()


def test_results_are_mean_and_std_over_seeds(finished):
    out, _ = finished
    results = json.loads((out / "results.json").read_text())
    hr1 = results["metrics"]["toy"]["a"]["topk/HR@1"]
    assert hr1["mean"] == pytest.approx(0.3) and hr1["std"] == pytest.approx(0.1)
    assert hr1["n"] == 3 and hr1["seeds"] == [0, 1, 2]
    f1 = results["metrics"]["other"]["b"]["interaction/F1"]  # 0.60, 0.61, 0.62
    assert f1["mean"] == pytest.approx(0.61) and f1["std"] == pytest.approx(0.01)
    assert results["stats"]["toy"]["users"] == 3
    assert [c["status"] for c in results["cells"]] == ["finished"] * 12
    rows = list(csv.DictReader((out / "results.csv").open()))
    row = next(
        r for r in rows if (r["dataset"], r["method"], r["metric"]) == ("toy", "b", "topk/HR@1")
    )
    assert float(row["mean"]) == pytest.approx(0.6) and row["n"] == "3"


def test_report_has_the_table3_layout(finished):
    _, text = finished
    assert (
        "| method | toy HR@1 | toy HR@2 | toy prec | toy rec | toy F1 | other HR@1 | other HR@2 "
        "| other prec | other rec | other F1 |" in text
    )
    # Method a is labelled LightGCN; b has the best HR@1 (0.6 ± 0.1), so it is bold; both have
    # the same precision, so neither is.
    assert "| LightGCN | 0.300 ± 0.100 | 0.400 ± 0.100 | 0.700 ± 0.000 | 0.510 ± 0.010 |" in text
    assert "| b | **0.600 ± 0.100** |" in text
    assert "| lambda | method | toy HR@1 |" in text and "| 0.1 | b | **0.600 ± 0.100** |" in text
    # the second series' rows follow, over the same lambdas: lambda 0 is method b there
    assert "| 0 | b | **0.600 ± 0.100** |" in text
    assert "| method | toy HR@10 | toy NDCG@10 | toy Recall@10 |" in text
    assert "| dataset | users | items | interactions | sparsity |" in text
    # The paper's LightGCN row beside ours (no ml-1m here, so ours is empty).
    assert "| LightGCN | 0.284 / – |" in text
    assert "| toy | LightGCN | 2 | finished | 1 |" in text  # cost table: dataset, method, seed
    assert "```yaml\nname: toy grid" in text


def test_charts_are_png(finished, tmp_path):
    out, text = finished
    for name in ("hr1.png", "ablation.png", "lambda.png"):
        assert (out / name).read_bytes()[:8] == PNG
        assert f"]({name})" in text
    results = json.loads((out / "results.json").read_text())
    # The hooks also work on explicit methods, e.g. an ablation's or a lambda sweep's variants.
    assert plot_ablation(results, tmp_path / "x.png", methods=["a"]).read_bytes()[:8] == PNG
    path = plot_lambda_curve(results, tmp_path / "y.png", methods=["a", "b"], lambdas=[1e-3, 1])
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="one lambda per method"):
        plot_lambda_curve(results, tmp_path / "z.png", methods=["a"], lambdas=[])
    with pytest.raises(ValueError, match="series 'x' needs one method per lambda"):
        plot_lambda_curve(
            results, tmp_path / "w.png", methods=["a", "b"], lambdas=[0, 1], series={"x": ["a"]}
        )


def test_same_users_table_pairs_a_method_with_its_domain_model():
    from lmrec.experiment.tables import same_users_markdown

    def agg(v):
        return {"mean": v, "std": None, "n": 1}

    results = {
        "datasets": [{"name": "toy", "label": "toy"}],
        "methods": [{"name": "lgcn", "label": "LightGCN"}, {"name": "drs", "label": "BDLM-drs"}],
        "metrics": {
            "toy": {
                "lgcn": {"topk/HR@1": agg(0.30)},
                "drs": {"topk/HR@1": agg(0.20), "domain/topk/HR@1": agg(0.16)},
            }
        },
    }
    text = same_users_markdown(results)
    assert "| BDLM-drs | **0.200** | – | – | – | – | +25.0% |" in text
    assert "| its domain model alone (BDLM-drs's users) | 0.160 |" in text
    assert "LightGCN" not in text  # no domain/ keys: not a pair
    del results["metrics"]["toy"]["drs"]["domain/topk/HR@1"]
    assert same_users_markdown(results) is None


def test_the_protocol_text_reads_the_candidate_counts_from_the_config():
    from lmrec.experiment.tables import protocol_section

    results = {
        "config": {"candidates": {"sampler": "popularity", "n_negatives": 9}},
        "seeds": [0],
        "protocol": {"toy": {"candidate_hashes": 1}},
    }
    text = protocol_section(results)
    assert "the test item + 9 negatives" in text and "19" not in text
    assert "sampler `popularity`" in text


def test_the_paper_table_is_data_and_fills_our_column_by_label():
    from lmrec.experiment.paper import PaperTable
    from lmrec.experiment.tables import paper_markdown

    paper = PaperTable("T", "toy", "a setting", ("topk/HR@1",), {"MF": (0.5,), "X": (0.1,)})
    results = {
        "datasets": [{"name": "toy", "label": "toy"}],
        "methods": [{"name": "mf", "label": "MF", "kind": "domain"}],
        "metrics": {"toy": {"mf": {"topk/HR@1": {"mean": 0.25, "std": None, "n": 1}}}},
    }
    text = paper_markdown(results, paper)
    assert "| MF | 0.500 / 0.250 |" in text and "| X | 0.100 / – |" in text
    assert "The paper: a setting." in text

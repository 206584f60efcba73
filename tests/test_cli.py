import json

import pytest

from lmrec.cli import main


def test_data_stats_json_on_shipped_ml100k(capsys):
    pytest.importorskip("pandas")
    try:
        main(["data", "stats", "ml-100k", "--json"])
    except SystemExit as exc:  # a machine without the recbole wheel has no offline source
        if exc.code == 2 and "no offline source" in capsys.readouterr().out:
            pytest.skip("ml-100k has no offline source here")
        raise
    stats = json.loads(capsys.readouterr().out)
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)


def test_unknown_dataset_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "stats", "no-such-data"])
    assert exc.value.code == 2
    out = capsys.readouterr().out
    assert "unknown dataset 'no-such-data'" in out and "ml-1m" in out


def test_train_config_with_unknown_section_names_it(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("modle: {dim: 8}\n")
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "train",
                "mf",
                "--dataset",
                "ml-100k",
                "--out",
                str(tmp_path / "run"),
                "--config",
                str(cfg),
            ]
        )
    assert exc.value.code == 2
    assert "unknown section(s) modle" in capsys.readouterr().out


def test_llm_evaluate_needs_a_run_or_a_dataset(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["llm", "evaluate"])
    assert exc.value.code == 2
    assert "--run" in capsys.readouterr().out

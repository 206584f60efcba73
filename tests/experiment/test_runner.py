"""Grid expansion, skipping finished cells, resuming an interrupted one, isolated cells."""

import fcntl
import json
import os

import pytest

from lmrec.errors import ConfigError, LmrecError
from lmrec.experiment.cell import KIND_TARGETS, CellError
from lmrec.experiment.config import experiment_from_dict
from lmrec.experiment.runner import expand, run_experiment, select_cells


def test_grid_expansion_order_and_seeds(fake):
    cfg = fake.config(seed_candidates=True)
    cfg["methods"][1]["per_dataset"] = {"other": {"train_config": {"lr": 0.5, "epochs": 2}}}
    cells = expand(experiment_from_dict(cfg))
    assert len(cells) == 12
    assert [c.id for c in cells[:4]] == [
        "toy/a/seed-0",
        "toy/a/seed-1",
        "toy/a/seed-2",
        "toy/b/seed-0",
    ]
    assert cells[-1].id == "other/b/seed-2"
    assert cells[-1].dataset == "json:/tmp/other"
    # The seed reaches the method's train config (kept keys intact) and, here, the candidates.
    assert cells[4].method.train_config == {"lr": 0.1, "seed": 1}
    assert cells[4].candidates == {"seed": 1}
    # per_dataset settings reach only their dataset's cells.
    assert cells[-1].method.train_config == {"lr": 0.5, "epochs": 2, "seed": 2}
    assert [c.id for c in select_cells(cells, ["*/b/seed-2", "toy/a"])] == [
        "toy/a/seed-0", "toy/a/seed-1", "toy/a/seed-2", "toy/b/seed-2", "other/b/seed-2"
    ]  # fmt: skip
    # A method name or label, or a dataset label, alone.
    assert [c.id for c in select_cells(cells, ["b", "LightGCN"])] == [c.id for c in cells]
    assert len(select_cells(cells, "oth*")) == 6
    with pytest.raises(ConfigError, match="matches no cell"):
        select_cells(cells, "nope/*")


def test_finished_cells_are_skipped(fake, tmp_path):
    report = run_experiment(fake.config(), tmp_path)
    assert report == tmp_path / "report.md"
    assert len(fake.calls) == 12 and set(fake.calls.values()) == {1}
    cell = json.loads((tmp_path / "cells/toy/b/seed-1/cell.json").read_text())
    assert cell["status"] == "finished" and len(cell["attempts"]) == 1
    assert cell["wall_s"] >= 0 and cell["peak_rss_mb"] > 0
    metrics = json.loads((tmp_path / "cells/toy/b/seed-1/metrics.json").read_text())
    assert metrics["topk/HR@1"] == pytest.approx(0.6) and metrics["train/seed_seen"] == 1.0

    run_experiment(fake.config(), tmp_path)  # nothing left to do
    assert set(fake.calls.values()) == {1}
    # A new seed (the --seeds override) adds only its own cells.
    run_experiment(fake.config(), tmp_path, seeds=[0, 1, 2, 3])
    assert sum(fake.calls.values()) == 16


def test_interrupted_cell_is_resumed(fake, tmp_path):
    fake.fail_first.add("toy/b/seed-1")
    with pytest.raises(CellError, match=r"1 of 12 cells failed.*\n- toy/b/seed-1: simulated"):
        run_experiment(fake.config(), tmp_path)
    folder = tmp_path / "cells/toy/b/seed-1"
    assert not (folder / "metrics.json").exists()
    assert json.loads((folder / "cell.json").read_text())["status"] == "failed"
    assert (tmp_path / "report.md").exists()  # written for the finished cells anyway
    assert len(fake.calls) == 12  # the other cells went on

    run_experiment(fake.config(), tmp_path)
    assert fake.calls["toy/b/seed-1"] == 2
    assert sum(fake.calls.values()) == 13  # only the failed cell ran again
    # Same folder: the kind saw its own earlier files (what lets train_run resume).
    assert (folder / "run/progress.txt").read_text() == "call 2\n"
    record = json.loads((folder / "cell.json").read_text())
    assert [a["status"] for a in record["attempts"]] == ["failed", "finished"]
    assert "simulated crash" in record["attempts"][0]["error"]
    assert record["wall_s"] == pytest.approx(sum(a["wall_s"] for a in record["attempts"]))


def test_fail_fast_stops_at_the_first_failure(fake, tmp_path):
    fake.fail_first.add("toy/a/seed-1")
    with pytest.raises(CellError):
        run_experiment(fake.config(fail_fast=True), tmp_path)
    assert sorted(fake.calls) == ["toy/a/seed-0", "toy/a/seed-1"]


def test_a_changed_config_does_not_reuse_a_finished_cell(fake, tmp_path):
    run_experiment(fake.config(seeds=[0]), tmp_path, only="toy/b")
    changed = fake.config(seeds=[0])
    changed["methods"][1]["train_config"] = {"lr": 0.2}
    with pytest.raises(ConfigError, match=r"toy/b/seed-0.*train_config\.lr: 0\.1 -> 0\.2"):
        run_experiment(changed, tmp_path, only="toy/b")
    # Labels and cosmetic keys may change without invalidating it.
    cosmetic = fake.config(seeds=[0])
    cosmetic["methods"][1].update(label="B!", train_config={"lr": 0.1, "progress": False})
    run_experiment(cosmetic, tmp_path, only="toy/b")
    assert fake.calls == {"toy/b/seed-0": 1}


def test_one_run_per_folder(fake, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another run_experiment on this folder
        with pytest.raises(LmrecError, match="another run is using"):
            run_experiment(fake.config(), tmp_path)
    assert fake.calls == {}
    run_experiment(fake.config(seeds=[0]), tmp_path)  # released: runs
    assert len(fake.calls) == 4


def test_unknown_kind_fails_before_any_cell(fake, tmp_path):
    cfg = fake.config()
    cfg["methods"][0]["kind"] = "nope"
    with pytest.raises(ConfigError, match="unknown cell kind 'nope'.*domain"):
        run_experiment(cfg, tmp_path)
    assert fake.calls == {}


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (
            {"name": "bdlm-llm", "kind": "bdlm", "model": "tiny-llama",
             "train_config": {"lamda": 0.1}, "options": {"side": "llm"}},
            r"method bdlm-llm.*joint: unknown key\(s\) lamda",
        ),
        (
            {"name": "bdlm-drs", "kind": "bdlm", "model": "tiny-llama",
             "options": {"llm": {"prompt": {"topk": "no-such-template"}}}},
            "no-such-template",
        ),
        (
            {"name": "bdlm-drs", "kind": "bdlm", "model": "tiny-llama",
             "options": {"domain": {"from_method": "lightgnc"}}},
            "from_method 'lightgnc' is not a method",
        ),
        (
            {"name": "sft", "kind": "llm", "model": "tiny-llama", "train_config": {"lr_tok": 1}},
            "method sft.*unknown key\\(s\\) lr_tok",
        ),
        ({"name": "lightgcn", "model_config": {"dims": 8}}, r"model_config.*key\(s\) dims"),
        ({"name": "sasrec", "train_config": {"epoch": 3}}, r"train_config.*key\(s\) epoch"),
        (
            {"name": "g", "kind": "gpt4sm", "model": "tiny-llama", "model_config": {"hiden": 8}},
            "method 'g': model_config.*unknown key\\(s\\) hiden",
        ),
    ],
)  # fmt: skip
def test_a_typo_in_the_last_method_fails_before_the_first_cell(fake, tmp_path, method, message):
    cfg = fake.config()
    cfg["methods"].append(method)
    with pytest.raises(ConfigError, match=message):
        run_experiment(cfg, tmp_path)
    assert fake.calls == {}  # the fake cells listed before it never ran


def test_isolated_cells_run_in_their_own_process(tmp_path, monkeypatch):
    # A kind in an importable module: the child process imports it by name. Seed 1 is killed
    # (SIGKILL, no chance to clean up) on its first run, as the OOM killer would.
    mod = tmp_path / "lmrec_fake_isolated_kind.py"
    mod.write_text(
        "import os, signal\n"
        "def run(cell, out_dir):\n"
        "    out_dir.mkdir(parents=True, exist_ok=True)\n"
        "    mark = out_dir / 'started'\n"
        "    if cell.seed == 1 and not mark.exists():\n"
        "        mark.write_text('once')\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return {'topk/HR@1': 0.25 * (cell.seed + 1), 'pid': float(os.getpid())}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setitem(KIND_TARGETS, "isolated-fake", "lmrec_fake_isolated_kind:run")
    cfg = {
        "name": "iso",
        "datasets": ["toy"],
        "methods": [{"name": "m", "kind": "isolated-fake"}],
        "seeds": [0, 1],
        "paper_reference": False,
    }
    with pytest.raises(CellError, match="toy/m/seed-1 exited with status -9"):
        run_experiment(cfg, tmp_path / "out")
    cells = tmp_path / "out/cells/toy/m"
    killed = json.loads((cells / "seed-1/cell.json").read_text())
    assert killed["status"] == "killed" and killed["attempts"][0]["error"] == "killed by signal 9"
    assert killed["attempts"][0]["wall_s"] > 0

    run_experiment(cfg, tmp_path / "out")  # seed 0 is skipped, seed 1 runs again
    pids = set()
    for seed, hr1 in ((0, 0.25), (1, 0.5)):
        metrics = json.loads((cells / f"seed-{seed}/metrics.json").read_text())
        assert metrics["topk/HR@1"] == hr1
        pids.add(metrics["pid"])
        record = json.loads((cells / f"seed-{seed}/cell.json").read_text())
        assert record["attempts"][-1]["peak_rss_scope"] == "cell process"
        assert record["peak_rss_mb"] > 0
    assert [a["status"] for a in record["attempts"]] == ["killed", "finished"]
    assert len(pids) == 2 and os.getpid() not in pids


def test_cli_experiment_seeds_and_only_select_cells(fake, tmp_path, capsys):
    from lmrec.cli import main

    cfg = tmp_path / "grid.json"
    cfg.write_text(json.dumps(fake.config(seeds=[0])))
    main(["experiment", str(cfg), "--out", str(tmp_path / "out"), "--seeds", "1,2", "--only", "a"])
    assert sorted(fake.calls) == [
        "other/a/seed-1",
        "other/a/seed-2",
        "toy/a/seed-1",
        "toy/a/seed-2",
    ]
    with pytest.raises(SystemExit) as exc:
        main(["experiment", str(cfg), "--out", str(tmp_path / "out"), "--seeds", "1,x"])
    assert exc.value.code == 2
    assert "--seeds takes comma-separated integers" in capsys.readouterr().out

"""Your own data: the layouts public datasets come in, each through the whole pipeline.

Small files are written in three layouts and run through ``lmrec data stats``, ``lmrec data
candidates`` and an experiment (popularity, LightGCN and BDLM on the tiny Llama):

- ``plays``: tab-separated ``.dat`` with a header, listen counts instead of ratings, no
  timestamps, an item file whose id column is named differently (``id``) with a ``tags`` column;
- ``bench``: RecBole benchmark files ``bench.train.inter`` / ``.valid.inter`` / ``.test.inter``;
- ``seq``: the sequential benchmark layout (``item_id_list:token_seq`` history + next item).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

N_USERS, N_ITEMS, PER_USER = 12, 30, 6


def _histories():
    rng = np.random.default_rng(0)
    return {
        f"u{u}": [f"a{j}" for j in rng.choice(N_ITEMS, PER_USER, replace=False)]
        for u in range(N_USERS)
    }


def write_plays(folder):
    lines = ["user\tartist\tweight"]
    for u, items in _histories().items():
        lines += [f"{u}\t{item}\t{10 * (k + 1)}" for k, item in enumerate(items)]
    (folder / "plays.dat").write_text("\n".join(lines) + "\n")
    rows = ["id\tname\ttags"] + [f"a{j}\tArtist {j}\tgenre{j % 3}" for j in range(N_ITEMS)]
    (folder / "artists.dat").write_text("\n".join(rows) + "\n")
    spec = "csv:{}?items=artists.dat&user=user&item=artist&rating=weight&timestamp=&item_key=id"
    return spec.format(folder / "plays.dat") + "&title=name&item.category=tags"


def write_bench(folder):
    parts = {"train": [], "valid": [], "test": []}
    for u, items in _histories().items():
        parts["train"] += [f"{u}\t{j}\t{t}" for t, j in enumerate(items[:-2])]
        parts["valid"].append(f"{u}\t{items[-2]}\t{PER_USER - 2}")
        parts["test"].append(f"{u}\t{items[-1]}\t{PER_USER - 1}")
    for stage, rows in parts.items():
        header = "user_id:token\titem_id:token\ttimestamp:float"
        (folder / f"bench.{stage}.inter").write_text("\n".join([header, *rows]) + "\n")
    items = ["item_id:token\ttitle:token_seq"] + [f"a{j}\tTitle {j}" for j in range(N_ITEMS)]
    (folder / "bench.item").write_text("\n".join(items) + "\n")
    return f"atomic:{folder}/bench"


def write_seq(folder):
    header = "user_id:token\titem_id_list:token_seq\titem_id:token"
    parts = {"train": [], "valid": [], "test": []}
    for u, items in _histories().items():
        for k in range(1, PER_USER - 2):  # every prefix, as the benchmark files list them
            parts["train"].append(f"{u}\t{' '.join(items[:k])}\t{items[k]}")
        parts["valid"].append(f"{u}\t{' '.join(items[:-2])}\t{items[-2]}")
        parts["test"].append(f"{u}\t{' '.join(items[:-1])}\t{items[-1]}")
    for stage, rows in parts.items():
        (folder / f"seq.{stage}.inter").write_text("\n".join([header, *rows]) + "\n")
    return f"atomic:{folder}/seq"


LAYOUTS = {"plays": write_plays, "bench": write_bench, "seq": write_seq}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_keeps_what_its_files_say(tmp_path, layout):
    import warnings

    from lmrec.protocol.prepare import prepare

    spec = LAYOUTS[layout](tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(spec, candidates={"sampler": "popularity", "n_negatives": 4})
    ds, split = prepared.dataset, prepared.split
    assert (ds.n_users, len(ds.inter)) == (N_USERS, N_USERS * PER_USER)
    hist = _histories()
    test_items = {
        ds.users.raw[u]: ds.items.raw[j]
        for u, j in zip(split.test["user"], split.test["item"], strict=True)
    }
    # every layout here holds out each user's last item for test (file order or given split)
    assert test_items == {u: items[-1] for u, items in hist.items()}
    protocol = prepared.protocol()["split"]
    assert ("as given by the source" in protocol) == (layout != "plays")
    if layout == "plays":
        assert "file order" in protocol
        assert ds.item_text["category"].str.startswith("genre").all()
        assert ds.titles()[0].startswith("Artist")


def test_a_split_with_two_test_rows_for_a_user_is_refused(tmp_path):
    from lmrec.errors import DataError
    from lmrec.protocol.prepare import prepare

    write_bench(tmp_path)
    test = tmp_path / "bench.test.inter"
    test.write_text(test.read_text() + "u0\tnew-item\t99\n")  # an item u0 never had
    with pytest.raises(DataError, match="one item per user and stage"):
        prepare(f"atomic:{tmp_path}/bench", candidates={"sampler": "popularity", "n_negatives": 4})


@pytest.mark.slow
def test_every_layout_goes_through_the_cli_and_an_experiment(tmp_path):
    import warnings

    from lmrec.cli import main
    from lmrec.experiment.runner import run_experiment

    specs = {
        name: write(tmp_path / name)
        for name, write in LAYOUTS.items()
        if (tmp_path / name).mkdir() is None
    }
    for spec in specs.values():
        llm_config = tmp_path / "llm.json"
        llm_config.write_text(
            json.dumps(
                {
                    "model": "tiny-llama",
                    "device": "cpu",
                    "candidates": {"sampler": "mixed"},  # title similarity: the item titles
                    "prompt": {"topk": "bdlm-topk", "max_history": 3},  # ids and titles
                    "train": {"epochs": 1, "batch_size": 8, "max_steps": 2},
                }
            )
        )
        run = tmp_path / "llm" / spec.rsplit("/", 1)[-1].split("?")[0]
        for args in (
            ["data", "stats", spec, "--json"],
            ["data", "candidates", spec, "--sampler", "mixed", "--out", str(tmp_path / "c")],
            ["train", "mf", "--dataset", spec, "--out", str(run / "mf")],
            [
                "llm",
                "train",
                "--dataset",
                spec,
                "--mode",
                "lora",
                "--config",
                str(llm_config),
                "--out",
                str(run / "lora"),
            ],
        ):
            try:
                main(args)
            except SystemExit as exc:
                assert not exc.code
    llm = {
        "device": "cpu",
        "tasks": ["topk"],
        "prompt": {"topk": "id-topk", "interaction": "id-interaction", "max_history": 4},
        "examples": {"tasks": ["topk"], "n_candidates": 5, "negatives": "candidates"},
    }
    config = {
        "name": "your own data",
        "candidates": {"sampler": "popularity", "n_negatives": 4},
        "datasets": list(specs.values()),
        "isolate": False,
        "paper_reference": False,
        "methods": [
            {"name": "popularity"},
            {
                "name": "lightgcn",
                "model_config": {"dim": 8, "n_layers": 1},
                "train_config": {"epochs": 1, "progress": False},
            },
            {
                "name": "bdlm-llm",
                "kind": "bdlm",
                "model": "tiny-llama",
                "train_config": {
                    "rows": "recent",
                    "batch_size": 4,
                    "epochs": 1,
                    "progress": False,
                    "listwise_weight": 1.0,
                },
                "options": {
                    "side": "llm",
                    "llm": llm,
                    "domain": {"from_method": "lightgcn"},
                    "projection": "orthogonal",
                    "evaluate": ["llm"],
                },
            },
        ],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run_experiment(config, tmp_path / "exp").read_text()
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    for name in specs:  # lmrec train and lmrec llm train wrote their metrics
        runs = list((tmp_path / "llm").glob(f"{name}*/*/metrics.json"))
        assert len(runs) == 2, runs
    assert [d["label"] for d in results["datasets"]] == ["plays", "bench", "seq"]
    for label in ("plays", "bench", "seq"):
        metrics = results["metrics"][label]
        assert metrics["bdlm-llm"]["eval/users"]["mean"] == N_USERS
        assert metrics["lightgcn"]["topk/HR@1"]["n"] == 1
        assert f"{label} HR@1" in report

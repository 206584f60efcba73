import json

import numpy as np
import pandas as pd
import pytest

from lmrec.config import from_dict
from lmrec.errors import ConfigError, DataError
from lmrec.protocol import candidate_files as files
from lmrec.protocol import candidates as cmod
from lmrec.protocol.candidate_files import (
    export_csv,
    load_candidates,
    load_or_build_candidates,
    read_csv,
    save_candidates,
)
from lmrec.protocol.candidates import CandidateConfig, CandidateSet, build_candidates
from lmrec.protocol.split import leave_one_out


def fake_embeddings(dataset):
    """Fixed vectors: each title its own axis, but Toy Story 2 nearly on Toy Story's."""
    names = sorted(
        set(dataset.titles()) | {"Toy Story (1995)", "Toy Story 2 (1999)", "Heat (1995)"}
    )
    vec = {t: np.eye(len(names))[i] for i, t in enumerate(names)}
    vec["Toy Story 2 (1999)"] = vec["Toy Story (1995)"] * 0.9 + vec["Heat (1995)"] * 0.1
    emb = np.stack([vec[t] for t in dataset.titles()]).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _interacted(dataset):
    return {u: set(h.tolist()) for u, h in enumerate(dataset.user_histories())}


def test_config_validation():
    with pytest.raises(ConfigError, match="choose one of"):
        CandidateConfig(sampler="random")
    with pytest.raises(ConfigError, match="textsim_top"):
        CandidateConfig(n_negatives=19, textsim_top=10)
    with pytest.raises(ConfigError, match="mix_popularity"):
        CandidateConfig(mix_popularity=1.5)
    with pytest.raises(ConfigError, match="n_negatives"):
        CandidateConfig(n_negatives=0)
    cfg = from_dict(CandidateConfig, {"seed": 3, "encoder": {"batch_size": 8}}, "candidates")
    assert cfg.seed == 3 and cfg.encoder.batch_size == 8
    with pytest.raises(ConfigError, match="candidates.encoder: unknown key"):
        from_dict(CandidateConfig, {"encoder": {"batch": 8}}, "candidates")


def test_shapes_labels_and_positives(movies):
    split = leave_one_out(movies)
    cfg = CandidateConfig(sampler="uniform", n_negatives=3, textsim_top=3)
    cands = build_candidates(movies, split, cfg)
    assert sorted(cands) == [
        ("interaction", "test"),
        ("interaction", "valid"),
        ("topk", "test"),
        ("topk", "valid"),
    ]
    for (task, stage), cs in cands.items():
        held = split.stage(stage)
        n_cand = 4 if task == "topk" else 2
        assert cs.items.shape == cs.labels.shape == (4, n_cand)  # 1m_5 has too few items
        assert cs.users.tolist() == held["user"].tolist()
        assert cs.items[:, 0].tolist() == held["item"].tolist()
        assert (cs.labels[:, 0] == 1).all() and (cs.labels[:, 1:] == 0).all()
        assert cs.describe()["negatives_by_sampler"] == {"uniform": 4 * (n_cand - 1)}
    # 1m_3 watched Toy Story, Toy Story 2, Heat, American President, Casino, Sabrina
    raw = movies.items.raw
    assert raw[cands[("topk", "valid")].items[2, 0]] == "Casino (1995)"
    assert raw[cands[("topk", "test")].items[2, 0]] == "Sabrina (1995)"


@pytest.mark.parametrize("sampler", ["uniform", "popularity", "textsim", "mixed"])
def test_no_negative_is_ever_an_interacted_item(sampler, random_dataset):
    for seed in range(12):
        ds = random_dataset(seed)
        split = leave_one_out(ds)
        emb = np.random.default_rng(seed).normal(size=(ds.n_items, 6)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        cfg = CandidateConfig(sampler=sampler, seed=seed, n_negatives=4, textsim_top=6)
        cands = build_candidates(ds, split, cfg, embeddings=emb)
        seen = _interacted(ds)
        test_item = dict(zip(split.test["user"], split.test["item"], strict=True))
        for cs in cands.values():
            for u, row in zip(cs.users, cs.items, strict=True):
                negs = set(row[1:].tolist())
                assert len(negs) == cs.n_candidates - 1
                assert not negs & seen[u]
                assert test_item[u] not in negs  # also for the valid stage


def test_determinism_by_seed(movies):
    split = leave_one_out(movies)
    emb = fake_embeddings(movies)
    a = build_candidates(
        movies, split, CandidateConfig(seed=1, n_negatives=3, textsim_top=3), embeddings=emb
    )
    b = build_candidates(
        movies, split, CandidateConfig(seed=1, n_negatives=3, textsim_top=3), embeddings=emb
    )
    for key in a:
        assert (a[key].items == b[key].items).all()
        assert a[key].meta["content_hash"] == b[key].meta["content_hash"]
    diffs = 0
    for seed in range(2, 8):
        c = build_candidates(
            movies, split, CandidateConfig(seed=seed, n_negatives=3, textsim_top=3), embeddings=emb
        )
        diffs += not (c[("topk", "test")].items == a[("topk", "test")].items).all()
    assert diffs > 0


def test_textsim_candidates_pick_the_most_similar_title(make_dataset, titles):
    # a's test item is Toy Story; of the titles a never saw, Toy Story 2 is the nearest
    rows = [("a", "Heat (1995)", 0), ("a", "Casino (1995)", 1), ("a", "Toy Story (1995)", 2)]
    rows += [("b", t, i) for i, t in enumerate(titles[:8])]
    rows += [("c", t, i) for i, t in enumerate(titles[7:])]
    ds = make_dataset(rows, "ts", {t: t for t in titles})
    split = leave_one_out(ds)
    cfg = CandidateConfig(sampler="textsim", n_negatives=1, textsim_top=1)
    cands = build_candidates(ds, split, cfg, embeddings=fake_embeddings(ds))
    a = ds.users.index("a")
    row = cands[("topk", "test")].items[list(cands[("topk", "test")].users).index(a)]
    assert ds.items.raw[row[0]] == "Toy Story (1995)"
    assert ds.items.raw[row[1]] == "Toy Story 2 (1999)"


def test_text_sampler_encodes_titles_when_no_embeddings_given(movies, monkeypatch):
    calls = []

    def fake_encode(titles, cfg):
        calls.append(list(titles))
        return fake_embeddings(movies)

    monkeypatch.setattr(cmod, "encode_titles", fake_encode)
    cands = build_candidates(
        movies, leave_one_out(movies), CandidateConfig(n_negatives=3, textsim_top=3)
    )
    assert calls == [movies.titles()]
    counts = cands[("topk", "test")].meta["negatives_by_sampler"]
    assert sum(counts.values()) == 4 * 3 and set(counts) == {"popularity", "textsim"}
    # uniform never needs the encoder
    build_candidates(
        movies,
        leave_one_out(movies),
        CandidateConfig(sampler="uniform", n_negatives=3, textsim_top=3),
    )
    assert len(calls) == 1


def test_save_load_round_trip_and_hash(movies, tmp_path):
    cands = build_candidates(
        movies,
        leave_one_out(movies),
        CandidateConfig(sampler="popularity", n_negatives=3, textsim_top=3),
    )
    save_candidates(cands, tmp_path / "c")
    back = load_candidates(tmp_path / "c")
    for key, cs in cands.items():
        assert (back[key].items == cs.items).all() and (back[key].labels == cs.labels).all()
        assert back[key].items.dtype == np.int64 and back[key].labels.dtype == np.int8
        assert back[key].meta == cs.meta
        assert back[key].meta["content_hash"] == back[key].compute_hash()
    doc = json.loads((tmp_path / "c" / "topk-test" / "candidates.json").read_text())
    assert doc["meta"]["config"]["sampler"] == "popularity"


def test_tampered_or_corrupt_files_give_a_clear_error(movies, tmp_path):
    cands = build_candidates(
        movies,
        leave_one_out(movies),
        CandidateConfig(sampler="uniform", n_negatives=3, textsim_top=3),
    )
    d = tmp_path / "c" / "topk-test"
    cands[("topk", "test")].save(d)
    meta_file = d / "candidates.json"
    doc = json.loads(meta_file.read_text())
    doc["meta"]["config"]["seed"] = 99
    meta_file.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"content hash mismatch.*delete .*topk-test to rebuild"):
        CandidateSet.load(d)

    cands[("topk", "test")].save(d)
    arrays = d / "arrays.safetensors"
    arrays.write_bytes(arrays.read_bytes()[:-7])  # truncated
    with pytest.raises(DataError, match=r"arrays.safetensors is corrupt.*delete"):
        CandidateSet.load(d)

    cands[("topk", "test")].save(d)
    meta_file.write_text('{"task": "topk", ')
    with pytest.raises(DataError, match="corrupt JSON"):
        CandidateSet.load(d)


def test_load_or_build_builds_once(movies, tmp_path, monkeypatch):
    split = leave_one_out(movies)
    cfg = CandidateConfig(sampler="uniform", n_negatives=3, textsim_top=3)
    first = load_or_build_candidates(movies, split, cfg, tmp_path)
    folders = [p.name for p in tmp_path.iterdir()]
    assert len(folders) == 1 and folders[0].startswith("movies-")

    def no_build(*a, **k):
        raise AssertionError("should load from the cache")

    monkeypatch.setattr(files, "build_candidates", no_build)
    again = load_or_build_candidates(movies, split, cfg, tmp_path)
    for key in first:
        assert (again[key].items == first[key].items).all()
    monkeypatch.undo()
    load_or_build_candidates(
        movies,
        split,
        CandidateConfig(sampler="uniform", seed=5, n_negatives=3, textsim_top=3),
        tmp_path,
    )
    load_or_build_candidates(movies, split, cfg, tmp_path, preprocess={"user_core": 5})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and not [n for n in names if n.endswith(".tmp")]


def test_load_or_build_leaves_nothing_on_failure(movies, tmp_path, monkeypatch):
    def broken_save(cands, directory):
        (directory / "half").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "save_candidates", broken_save)
    cfg = CandidateConfig(sampler="uniform", n_negatives=3, textsim_top=3)
    with pytest.raises(KeyboardInterrupt):
        load_or_build_candidates(movies, leave_one_out(movies), cfg, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_csv_in_raw_ids_round_trips(movies, titles, tmp_path):
    cands = build_candidates(
        movies,
        leave_one_out(movies),
        CandidateConfig(sampler="uniform", n_negatives=3, textsim_top=3),
    )
    files = export_csv(cands, movies, tmp_path)
    assert sorted(p.name for p in files) == [
        "candidates.csv",
        "interaction_test.csv",
        "interaction_valid.csv",
        "topk_test.csv",
        "topk_valid.csv",
    ]
    df = pd.read_csv(tmp_path / "candidates.csv", dtype=str)
    assert list(df.columns) == ["user_id", "item_id", "label"]
    assert len(df) == 4 * 4 and df["label"].tolist()[:4] == ["1", "0", "0", "0"]
    assert df["user_id"].iloc[0] == "1m_1"
    assert df["item_id"].iloc[0] == "Balto (1995)"  # 1m_1's last item, raw title id
    assert set(df["item_id"]) <= set(titles)
    for (task, stage), cs in cands.items():
        back = read_csv(tmp_path / f"{task}_{stage}.csv", movies, task, stage)
        assert (back.users == cs.users).all() and (back.items == cs.items).all()
        assert (back.labels == cs.labels).all()


def test_read_csv_errors(movies, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item\n1m_1,Heat (1995)\n")
    with pytest.raises(DataError, match="missing column.*item_id"):
        read_csv(bad, movies, "topk", "test")
    bad.write_text("user_id,item_id,label\n1m_1,Heat (1995),1\n1m_1,Nope (2000),0\n")
    with pytest.raises(DataError, match="unknown item id 'Nope \\(2000\\)'"):
        read_csv(bad, movies, "topk", "test")
    bad.write_text("user_id,item_id,label\n1m_1,Heat (1995),1\n1m_1,Babe (1995),1\n")
    with pytest.raises(DataError, match="line 2: each user needs exactly one label 1"):
        read_csv(bad, movies, "topk", "test")


def test_export_csv_of_one_set_writes_that_file(movies, tmp_path):
    cfg = CandidateConfig(sampler="uniform", n_negatives=3, textsim_top=3)
    cands = build_candidates(movies, leave_one_out(movies), cfg)
    cs = cands[("interaction", "valid")]
    assert export_csv(cs, movies, tmp_path / "iv.csv") == [tmp_path / "iv.csv"]
    back = read_csv(tmp_path / "iv.csv", movies, "interaction", "valid")
    assert (back.items == cs.items).all() and back.items.shape == (4, 2)


def test_head_keeps_the_first_users_and_the_meta():
    items = np.arange(15).reshape(5, 3)
    labels = np.zeros((5, 3), dtype=np.int8)
    labels[:, 0] = 1
    cands = CandidateSet("topk", "test", np.arange(10, 15), items, labels, {"seed": 3})
    first = cands.head(2)
    assert first.users.tolist() == [10, 11]
    assert first.items.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert first.labels[:, 0].tolist() == [1, 1] and first.meta == {"seed": 3}
    assert (first.task, first.stage) == ("topk", "test")
    assert cands.head(0) is cands and cands.head(5) is cands and len(cands.head(4)) == 4

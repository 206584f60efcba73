"""The dataset registry and entry points: names, spec strings, sources, and the dataset cache."""

import hashlib
import io
import json
import zipfile

import pytest

from lmrec.data import PreprocessConfig, dataset_names, load_dataset, load_raw, sources
from lmrec.data import datasets as ds
from lmrec.data import load as load_mod
from lmrec.data.sources import Download
from lmrec.errors import ConfigError, DataError, SourceNotFoundError

RATINGS = "1::10::5::300\n1::20::3::100\n2::20::4::200\n2::20::2::250\n"  # 2 rates 20 twice
MOVIES = "10::Toy Story (1995)::Animation|Comedy\n20::Heat (1995)::Action\n"


def ml1m_dir(root):
    d = root / "ml-1m"
    d.mkdir(parents=True)
    (d / "ratings.dat").write_text(RATINGS)
    (d / "movies.dat").write_text(MOVIES)
    return root


def test_names_and_unknown_name():
    assert {"ml-100k", "ml-1m", "amazon-office"} <= set(dataset_names())
    with pytest.raises(
        ConfigError, match=r"unknown dataset 'ml-2m'; choose one of: .*ml-1m.*atomic:"
    ):
        load_raw("ml-2m")
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        load_raw("csv:x.csv?colour=red")


def test_data_dir_wins_and_dedup_counts(tmp_path):
    root = ml1m_dir(tmp_path)
    raw = load_raw("ml-1m", data_dir=root, download=False)
    assert len(raw) == 4
    data = load_dataset("ml-1m", data_dir=root, download=False)
    assert data.stats() == {
        "dataset": "ml-1m", "users": 2, "items": 2, "interactions": 3, "sparsity": 0.25,
    }  # fmt: skip
    assert data.titles() == ["Toy Story (1995)", "Heat (1995)"]
    assert data.inter["timestamp"].tolist() == [100, 300, 200]  # chronological per user


def test_cdr_style_atomic_users_lose_the_domain_prefix(tmp_path):
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "ml-1m.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1m_7\tHeat (1995)\t4\t9\n"
    )
    (d / "ml-1m.item").write_text(
        "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
        "Heat (1995)\tHeat\t1995\tAction Crime\n"
    )
    raw = load_raw("ml-1m", data_dir=tmp_path, download=False)
    assert raw.inter["user_id"].tolist() == ["7"]
    assert raw.items["title"].tolist() == ["Heat (1995)"]


def test_dataset_cache_is_reused_and_keyed_by_source_and_config(tmp_path, isolated_cache):
    root = ml1m_dir(tmp_path)
    first = load_dataset("ml-1m", data_dir=root, download=False)
    folders = list((isolated_cache / "datasets").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("ml-1m-")
    provenance = json.loads((folders[0] / "source.json").read_text())
    assert provenance["origin"] == "data_dir" and provenance["preprocess"]["dedup"] is True

    # Reused: the loader is never called again.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(load_mod, "_load", lambda entry, files: pytest.fail("rebuilt instead of reused"))
        again = load_dataset("ml-1m", data_dir=root, download=False)
    assert again.stats() == first.stats() and again.titles() == first.titles()

    # Another config or a changed file: another folder.
    load_dataset("ml-1m", data_dir=root, preprocess=PreprocessConfig(dedup=False), download=False)
    (root / "ml-1m" / "ratings.dat").write_text(RATINGS + "3::10::5::1\n")
    assert load_dataset("ml-1m", data_dir=root, download=False).n_users == 3
    names = [p.name for p in (isolated_cache / "datasets").iterdir()]
    assert len(names) == 3 and not [n for n in names if n.startswith(".")]  # no temp folders


def test_corrupt_cache_is_rebuilt_and_cache_false_writes_nothing(tmp_path, isolated_cache):
    root = ml1m_dir(tmp_path)
    load_dataset("ml-1m", data_dir=root, download=False)
    (folder,) = (isolated_cache / "datasets").iterdir()
    (folder / "inter.parquet").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="rebuilding the cached dataset"):
        assert load_dataset("ml-1m", data_dir=root, download=False).n_users == 2
    assert load_dataset("ml-1m", data_dir=root, download=False).n_users == 2
    other = tmp_path / "other"
    ml1m_dir(other)
    assert load_dataset("ml-1m", data_dir=other, cache=False, download=False).n_items == 2
    assert len(list((isolated_cache / "datasets").iterdir())) == 1


def test_failed_build_leaves_nothing(tmp_path, isolated_cache):
    root = ml1m_dir(tmp_path)
    (root / "ml-1m" / "ratings.dat").write_text("1::10::5::300\n1::20::x::100\n")
    with pytest.raises(DataError, match=r"ratings\.dat, line 2: column 'rating' holds 'x'"):
        load_dataset("ml-1m", data_dir=root, download=False)
    assert not (isolated_cache / "datasets").exists() or not any(
        (isolated_cache / "datasets").iterdir()
    )


def test_ml100k_download_end_to_end(http_server, monkeypatch, isolated_cache):
    buf = io.BytesIO()
    flags = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t10\t4\t100\n2\t10\t5\t50\n")
        zf.writestr("ml-100k/u.item", f"10|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n")
        zf.writestr("ml-100k/README", "tiny")
    blob = buf.getvalue()
    www, base = http_server
    (www / "ml-100k.zip").write_bytes(blob)
    url = f"{base}/ml-100k.zip"
    monkeypatch.setitem(ds.ML_DOWNLOADS, "ml-100k", Download(url, hashlib.sha256(blob).hexdigest()))
    monkeypatch.setattr(sources, "wheel_dir", lambda package: None)  # as if no wheel installed

    with pytest.raises(SourceNotFoundError, match="download=False"):
        load_raw("ml-100k", download=False)
    raw = load_raw("ml-100k")
    assert (len(raw), raw.n_users, raw.n_items) == (2, 2, 1)
    assert raw.items["genres"].tolist() == ["Comedy"]
    assert (isolated_cache / "raw" / "ml-100k" / "u.data").is_file()


def test_spec_strings(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "toy.inter").write_text("user_id:token\titem_id:token\nu\ti\n")
    (tmp_path / "a" / "toy.inter.json").write_text('{"u": ["i", "j"]}')
    (tmp_path / "a" / "ev.csv").write_text("user_id,item_id\nu,i\nv,i\n")
    (tmp_path / "a" / "it.csv").write_text("item_id,title\ni,Thing\n")
    assert len(load_raw(f"atomic:{tmp_path}/a/toy")) == 1
    assert load_raw(f"json:{tmp_path}/a/toy").inter["timestamp"].tolist() == [0, 1]
    monkeypatch.chdir(tmp_path)  # relative paths are relative to the working directory
    data = load_dataset("csv:a/ev.csv?items=it.csv&timestamp=&rating=")
    assert data.name == "csv:a/ev.csv?items=it.csv&timestamp=&rating="
    assert (data.n_users, data.n_items, data.titles()) == (2, 1, ["Thing"])
    with pytest.raises(
        SourceNotFoundError, match=r"(?s)path: no .*nope\.inter in /.*check the path"
    ):
        load_raw("atomic:a/nope")


def test_amazon_spec_is_searched_in_data_dirs(tmp_path, monkeypatch):
    import gzip

    d = tmp_path / "amazon2014" / "Office_Products"
    d.mkdir(parents=True)
    review = {"reviewerID": "U", "asin": "A", "overall": 5.0, "unixReviewTime": 1}
    with gzip.open(d / "reviews_Office_Products_5.json.gz", "wt") as fh:
        fh.write(json.dumps(review) + "\n")
    with gzip.open(d / "meta_Office_Products.json.gz", "wt") as fh:
        fh.write("{'asin': 'A', 'title': 'Pen'}\n")
    monkeypatch.setenv("LMREC_DATA_DIR", str(tmp_path))
    data = load_dataset("amazon2014:Office_Products")
    assert data.titles() == ["Pen"]
    with pytest.raises(SourceNotFoundError, match="reviews_Books_5.json.gz"):
        load_raw("amazon2014:Books")


def test_amazon_office_from_data_dir_subfolder(tmp_path):
    d = tmp_path / "amazon2014-office"
    d.mkdir()
    (d / "Office.inter.json").write_text('{"0": [0, 1], "1": [1]}')
    (d / "Office.item.json").write_text('{"0": {"title": "Pen"}, "1": {"title": "Ink"}}')
    data = load_dataset("amazon-office", data_dir=tmp_path)
    assert data.stats()["interactions"] == 3
    assert data.titles() == ["Pen", "Ink"]

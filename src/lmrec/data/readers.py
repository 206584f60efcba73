"""Low-level readers the loaders share: delimited tables and JSON/Python-literal lines.

Every reader turns a parse failure into one :class:`~lmrec.errors.DataError` that names the file,
the line (1-based, as an editor shows it) and, where it applies, the column. Gzip is detected from
the file's first bytes, not its name, so ``x.json`` and ``x.json.gz`` both work.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmrec.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def require_file(path: Path, what: str = "data file") -> Path:
    """``path`` if it is a non-empty file, else a :class:`DataError` saying which."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; download or export it again")
    return path


def read_bytes(path: Path) -> bytes:
    """The whole (decompressed) content of ``path``; a truncated gzip raises a clear error."""
    path = require_file(path)
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{path}: truncated or corrupt gzip file ({exc}); download it again"
        ) from None


def iter_lines(
    path: Path, encoding: str = "utf-8", desc: str | None = None
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for each non-blank line of a (possibly gzipped) text file.

    Raises
    ------
    DataError
        The file is missing or empty, the gzip stream is truncated or corrupt, or a line is not
        valid ``encoding``. The message names the file and the last good line.
    """
    from tqdm.auto import tqdm

    path = require_file(path)
    opener = gzip.open if is_gzip(path) else open
    lineno, seen = 0, 0
    try:
        with (
            opener(path, "rt", encoding=encoding) as fh,  # type: ignore[operator]
            tqdm(desc=desc or path.name, unit=" lines", disable=None, leave=False) as bar,
        ):
            for lineno, line in enumerate(fh, 1):  # noqa: B007 (lineno is read after the loop)
                bar.update()
                if line.strip():
                    seen += 1
                    yield lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: truncated or corrupt gzip file after line {lineno} ({exc}); download it again"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}, line {lineno + 1}: not valid {encoding} text ({exc.reason}); "
            "check the file's encoding"
        ) from None
    if seen == 0:
        raise DataError(f"{path} holds no data (only blank lines); download or export it again")


def parse_json_line(path: Path, lineno: int, line: str) -> Any:
    """One strict-JSON line (the 2018 Amazon format)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}, line {lineno}: corrupt JSON ({exc.msg} at column {exc.colno}); "
            "the file may be truncated or edited: download it again"
        ) from None


def parse_literal_line(path: Path, lineno: int, line: str) -> Any:
    """One Python-literal line (the 2014 Amazon metadata), parsed safely.

    Only :func:`ast.literal_eval` is used: it accepts literals (dicts, lists, strings, numbers)
    and nothing that could run code, so a malicious or corrupt line fails here.
    """
    try:
        return ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise DataError(
            f"{path}, line {lineno}: not a Python literal ({type(exc).__name__}: {exc}); the "
            "2014 Amazon metadata holds one Python dict per line: download the file again"
        ) from None


def parse_json_or_literal_line(path: Path, lineno: int, line: str) -> Any:
    """A line that is strict JSON or, failing that, a Python literal (2014 review dumps)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        pass
    try:
        return parse_literal_line(path, lineno, line)
    except DataError:
        raise DataError(
            f"{path}, line {lineno}: neither JSON nor a Python literal; the file may be "
            "truncated or edited: download it again"
        ) from None


@dataclass
class Table:
    """A delimited file read with every value as a string, able to name a row's file line."""

    path: Path
    frame: pd.DataFrame
    text: str = field(repr=False)
    first_line: int  # file line of the first data row (1 without a header, 2 with one)
    quoted: bool = False  # quoted fields may span lines, so rows are named by number

    def __len__(self) -> int:
        return len(self.frame)

    def where(self, row: int) -> str:
        """``"line N"`` of data row ``row`` (0-based), or ``"row N"`` in a Parquet file."""
        if not self.text or self.quoted:
            return f"row {row + 1}"
        return f"line {self.line(row)}"

    def line(self, row: int) -> int:
        """File line number of data row ``row`` (0-based), counting the blank lines skipped."""
        seen = -1
        for lineno, line in enumerate(self.text.splitlines(), 1):
            if lineno < self.first_line or not line.strip():
                continue
            seen += 1
            if seen == row:
                return lineno
        return self.first_line + row

    def column(self, name: str, fix: str = "") -> pd.Series:
        """Column ``name``; a missing one raises an error naming the file and the columns found."""
        if name not in self.frame.columns:
            found = ", ".join(map(str, self.frame.columns))
            raise DataError(
                f"{self.path}: missing column {name!r} (found: {found})"
                + (f"; {fix}" if fix else "")
            )
        return self.frame[name]

    def numbers(self, name: str, required: bool = True) -> np.ndarray:
        """Column ``name`` parsed as float64; the first non-number is named by line and column.

        Empty cells become NaN, or raise when ``required``.
        """
        column = self.column(name)
        if required:
            try:  # fast path (a C cast); on failure, the slow path finds the bad row
                fast = column.astype("float64").to_numpy()
            except (ValueError, TypeError):
                fast = None
            if fast is not None and not np.isnan(fast).any():  # "nan" is not a number here
                return fast
        values = column.astype(str).str.strip()
        out = pd.to_numeric(values, errors="coerce")
        bad = out.isna().to_numpy().copy()
        if not required:
            bad &= (values != "").to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{self.path}, {self.where(i)}: column {name!r} holds "
                f"{self.frame[name].iloc[i]!r}, not a number"
            )
        return out.to_numpy(dtype=np.float64, na_value=np.nan)


def read_table(
    path: Path,
    sep: str,
    *,
    names: list[str] | None = None,
    encoding: str = "utf-8",
    quoted: bool = False,
) -> Table:
    """Read a delimited text file with every value as a string.

    Parameters
    ----------
    path:
        The file (gzip allowed).
    sep:
        Field separator; may be several characters (MovieLens-1M's ``::``).
    names:
        Column names for a file without a header; ``None`` reads the first line as the header.
    quoted:
        Honour CSV double quotes (generic CSV). Off for MovieLens and RecBole files, whose
        titles contain bare quotes.

    Raises
    ------
    DataError
        Empty file, a line with too many or too few fields (named), undecodable text.
    """
    path = Path(path)
    data = read_bytes(path)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: not valid {encoding} text; check the file's encoding"
        ) from None
    if not text.strip():
        raise DataError(f"{path} is empty; download or export it again")
    if len(sep) > 1:
        if "\t" in text:
            raise DataError(f"{path}: unexpected tab character in a {sep!r}-separated file")
        # The C parser only takes one-character separators; the python engine is ~20x slower.
        text, sep = text.replace(sep, "\t"), "\t"
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=None if names is not None else 0,
            names=names,
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
            skip_blank_lines=True,
            engine="c",
        )
    except pd.errors.ParserError as exc:
        raise DataError(
            f"{path}: malformed table ({exc}); fix or download the file again"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; download or export it again") from None
    table = Table(path, frame, text, 1 if names is not None else 2, quoted and '"' in text)
    if len(frame) == 0:
        raise DataError(f"{path} has a header but no rows")
    _check_short_rows(table, sep)
    return table


def _check_short_rows(table: Table, sep: str) -> None:
    # pandas fills missing trailing fields with "" (like genuinely empty cells), so rows with an
    # empty cell are re-checked against their text; files without empty cells skip this pass.
    frame = table.frame
    if table.quoted:
        return  # a quoted field may hold the separator or a newline: lines do not map to rows
    empty = (frame == "").to_numpy().any(axis=1) | frame.isna().to_numpy().any(axis=1)
    if not empty.any():
        return
    lines = [
        (n, line)
        for n, line in enumerate(table.text.splitlines(), 1)
        if n >= table.first_line and line.strip()
    ]
    for i in np.flatnonzero(empty):
        lineno, line = lines[i] if i < len(lines) else (table.first_line + i, "")
        if line.count(sep) < len(frame.columns) - 1:
            raise DataError(
                f"{table.path}, line {lineno}: too few fields (expected {len(frame.columns)}: "
                f"{', '.join(map(str, frame.columns))})"
            )

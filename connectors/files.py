"""Files: a drop folder read once per file, and atomic CSV / JSON Lines writers.

Another system drops files into a folder; `DropFolder.pending()` lists the complete
ones (hidden and `.tmp` files are still being written), `read()` reads one into records,
and `archive()` moves it to `archive/` once its batch is delivered. A file whose name is
already in the archive was processed before: it is archived as a duplicate without being
read again.

A line that holds no record (a CSV row with more or fewer fields than the header, a JSON
line that is no JSON, bytes that are not UTF-8) does not stop the file: `read()` returns it
apart, with its line number and why, so the rest of the file goes on and the line can be
dead-lettered. A CSV whose header cannot name its rows (a name given twice, bytes that are
not UTF-8) is returned whole as one such line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
from interlink.connectors.decoding import STRICT_JSON
from interlink.connectors.errors import ConfigError

READERS = {".csv": "csv", ".jsonl": "jsonl"}
NOT_UTF8 = "bytes that are not UTF-8"
_LINE_END = re.compile(r"(?:\r\n|\r|\n)\Z")
_UNDECODED = re.compile("[\udc80-\udcff]")  # what `surrogateescape` makes of a byte that is not UTF-8


class FileRead(NamedTuple):
    """A file's records (CSV rows as dicts of text, a blank value missing; JSON lines as parsed), its
    `unreadable` lines, each as text (bytes that are not UTF-8 written `\\xe9`) with why, and a CSV's `columns`."""

    records: list[Any]
    unreadable: list[tuple[str, str]]
    columns: list[str] | None = None

    def frame(self) -> pd.DataFrame:
        """A CSV's rows as text columns in the header's order, a column of blanks too."""
        return pd.DataFrame(self.records, columns=self.columns, dtype=str)


class DropFolder:
    def __init__(self, path: Path, suffix: str = ".csv", archive: Path | None = None):
        if suffix not in READERS:
            raise ConfigError(f"drop folder suffix {suffix!r} is not supported: use one of {', '.join(READERS)}")
        self.path = Path(path)
        self.suffix = suffix
        self.archive_dir = Path(archive) if archive else self.path / "archive"

    def pending(self) -> list[Path]:
        """Complete files not processed yet, oldest name first; earlier duplicates are archived."""
        if not self.path.is_dir():
            raise ConfigError(f"drop folder {self.path} does not exist: create it or fix the integration's folder setting")
        files = sorted(p for p in self.path.glob(f"*{self.suffix}") if p.is_file() and not p.name.startswith("."))
        fresh = []
        for file in files:
            if (self.archive_dir / file.name).exists():
                self._move(file, f"{file.name}.duplicate")
            else:
                fresh.append(file)
        return fresh

    def read(self, file: Path) -> FileRead:
        """`file`'s records and the lines that hold none, read as UTF-8 (a byte-order mark is dropped)."""
        data = file.read_bytes()
        try:
            text, clean = data.decode("utf-8-sig"), True
        except UnicodeDecodeError:
            text, clean = data.decode("utf-8-sig", "surrogateescape"), False
        return _csv_rows(text, clean) if self.suffix == ".csv" else _json_lines(text, clean)

    def archive(self, file: Path) -> Path:
        """Move a processed file into the archive."""
        return self._move(file, file.name)

    def _move(self, file: Path, name: str) -> Path:
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        target = self.archive_dir / name
        counter = 1
        while target.exists():
            counter += 1
            target = self.archive_dir / f"{name}.{counter}"
        return file.rename(target)


def _csv_rows(text: str, clean: bool) -> FileRead:
    lines = io.StringIO(text, newline="").readlines()  # as the reader sees them: its line numbers index this list
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # no field is longer than its file
    rows = csv.reader(lines, strict=True)  # a quote out of place is an error for its record, not a guess

    def lines_of(first: int, last: int) -> tuple[str, str]:
        """The record's text as the file has it, and where it is."""
        text = _LINE_END.sub("", "".join(lines[first - 1:last]))
        return _shown(text), f"line {first}" if first == last else f"lines {first}-{last}"

    try:
        header = next(rows, None)
    except csv.Error as exc:
        header, broken = [], str(exc)
    else:
        broken = ""
    if header is None:
        return FileRead([], [], [])
    twice = sorted({name for name in header if header.count(name) > 1})
    names = "".join(header)
    if broken or twice or "\x00" in names or not clean and _UNDECODED.search(names):
        why = (f"is not CSV ({broken})" if broken else f"names {', '.join(map(repr, twice))} twice" if twice
               else "holds a NUL byte (a file in UTF-16?)" if "\x00" in names else f"holds {NOT_UTF8}")
        text, where = lines_of(1, max(rows.line_num, 1))
        return FileRead([], [(text, f"{where}: the header {why}, so no row of the file can be read: "
                                    "fix the file and drop it again under a new name")], [])
    records, unreadable, end = [], [], rows.line_num
    while True:
        try:
            row = next(rows, None)
        except csv.Error as exc:
            start, end = end + 1, rows.line_num
            text, where = lines_of(start, end)
            unreadable.append((text, f"{where}: not CSV: {exc}" + (" (a quote is never closed)" if "end of data" in str(exc) else "")))
            continue
        if row is None:
            return FileRead(records, unreadable, header)
        start, end = end + 1, rows.line_num
        if not row:  # a blank line
            continue
        if len(row) != len(header):
            text, where = lines_of(start, end)
            unreadable.append((text, f"{where}: {len(row)} fields where the header has {len(header)}"))
        elif not clean and (bad := [name for name, value in zip(header, row) if _UNDECODED.search(value)]):
            text, where = lines_of(start, end)
            unreadable.append((text, f"{where}: {', '.join(bad)}: {NOT_UTF8}"))
        else:
            records.append({name: value or None for name, value in zip(header, row)})


def _json_lines(text: str, clean: bool) -> FileRead:
    records, unreadable = [], []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON text may hold U+2028 and the like
        if not line.strip():
            continue
        if not clean and _UNDECODED.search(line):
            unreadable.append((_shown(line), f"line {number}: {NOT_UTF8}"))
            continue
        try:
            records.append(STRICT_JSON.decode(line))
        except json.JSONDecodeError as exc:
            unreadable.append((line, f"line {number}: not JSON: {exc.msg} at column {exc.colno}"))
        except ValueError as exc:  # what `STRICT_JSON` refuses beyond the grammar
            unreadable.append((line, f"line {number}: not JSON: {exc}"))
    return FileRead(records, unreadable)


def _shown(text: str) -> str:
    """`text` with each byte that was not UTF-8 written as `\\xe9`."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` as CSV; readers never see a half-written file."""
    return _atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_jsonl(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` as JSON Lines; readers never see a half-written file."""
    return _atomic(path, lambda tmp: frame.to_json(tmp, orient="records", lines=True, date_format="iso"))


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path

"""Files: a drop folder read once per file, and atomic CSV / JSON Lines writers.

Another system drops files into a folder; `DropFolder.pending()` lists the complete
ones (hidden and `.tmp` files are still being written), `read()` streams one in
DataFrames, and `archive()` moves it to `archive/` once its batch is delivered. A file
whose name is already in the archive was processed before: it is archived as a
duplicate without being read again.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from connectors.errors import ConfigError

READERS = {".csv": "csv", ".jsonl": "jsonl"}


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

    def read(self, file: Path, chunk_rows: int = 100_000) -> Iterator[pd.DataFrame]:
        """Stream `file` in DataFrames of at most `chunk_rows`, every column as text."""
        if self.suffix == ".csv":
            yield from pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""], chunksize=chunk_rows)
        else:
            yield from pd.read_json(file, lines=True, dtype=False, chunksize=chunk_rows)

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

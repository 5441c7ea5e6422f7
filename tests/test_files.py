"""The files connector: a drop folder read once per file, atomic writers."""

import pandas as pd
import pytest

from connectors.files import DropFolder, write_csv, write_jsonl
from interlink.settings import ConfigError


def frame(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"sku": [f"S{i}" for i in range(start, start + n)], "on_hand": [str(i) for i in range(n)]})


@pytest.mark.parametrize(("suffix", "writer"), [(".csv", write_csv), (".jsonl", write_jsonl)])
def test_each_dropped_file_is_read_once_then_archived(tmp_path, suffix, writer):
    drop = DropFolder(tmp_path, suffix)
    writer(frame(5), tmp_path / f"a{suffix}")
    writer(frame(3, 5), tmp_path / f"b{suffix}")
    (tmp_path / f".c{suffix}.tmp").write_text("half a file")  # still being written by the other system

    files = drop.pending()
    assert [f.name for f in files] == [f"a{suffix}", f"b{suffix}"]
    first = pd.concat(drop.read(files[0], chunk_rows=2))
    assert list(first["sku"]) == [f"S{i}" for i in range(5)]
    drop.archive(files[0])
    assert [f.name for f in drop.pending()] == [f"b{suffix}"]
    assert (tmp_path / "archive" / f"a{suffix}").is_file()


def test_reading_streams_bounded_chunks(tmp_path):
    write_csv(frame(10), tmp_path / "big.csv")
    drop = DropFolder(tmp_path)
    assert [len(c) for c in drop.read(drop.pending()[0], chunk_rows=4)] == [4, 4, 2]


def test_a_file_dropped_again_under_a_processed_name_is_not_read_twice(tmp_path):
    drop = DropFolder(tmp_path)
    write_csv(frame(2), tmp_path / "stock.csv")
    drop.archive(drop.pending()[0])
    write_csv(frame(2), tmp_path / "stock.csv")
    assert drop.pending() == []
    assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == ["stock.csv", "stock.csv.duplicate"]


def test_csv_values_stay_text_and_blanks_are_missing(tmp_path):
    (tmp_path / "x.csv").write_text("sku,on_hand\n007,\nS2,5\n")
    drop = DropFolder(tmp_path)
    read = next(drop.read(drop.pending()[0]))
    assert read["sku"].tolist() == ["007", "S2"] and read["on_hand"].isna().tolist() == [True, False]


def test_bad_configuration_names_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="suffix '.xlsx' is not supported"):
        DropFolder(tmp_path, ".xlsx")
    with pytest.raises(ConfigError, match="does not exist"):
        DropFolder(tmp_path / "missing").pending()


def test_writers_leave_no_temporary_file(tmp_path):
    write_jsonl(frame(3), tmp_path / "out" / "x.jsonl")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.jsonl"]
    assert len(pd.read_json(tmp_path / "out" / "x.jsonl", lines=True)) == 3

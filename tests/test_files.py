"""The files connector: a drop folder read once per file, atomic writers."""

import pandas as pd
import pytest
from interlink.connectors.files import DropFolder, write_csv, write_jsonl

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
    assert [r["sku"] for r in drop.read(files[0]).records] == [f"S{i}" for i in range(5)]
    drop.archive(files[0])
    assert [f.name for f in drop.pending()] == [f"b{suffix}"]
    assert (tmp_path / "archive" / f"a{suffix}").is_file()


def test_a_csv_line_that_holds_no_record_is_set_apart_with_its_line_and_why(tmp_path):
    (tmp_path / "x.csv").write_bytes(
        b"\xef\xbb\xbfsku,on_hand\r\n"  # a byte-order mark, Windows line ends
        b"S1,5\r\n"
        b"S2,5,extra\r\n"
        b"\r\n"  # a blank line
        b"S3\r\n"
        b'"S4\nsecond line",7\r\n'  # a quoted line break: one record over two lines
        b"caf\xe9,8\r\n"  # Latin-1, not UTF-8
        b"S6,\x00\r\n"  # a NUL is text like any other; the target says whether it can store it
        b"S7,\xe2\x80\xa8\r\n"  # U+2028 is no line end in CSV
    )
    drop = DropFolder(tmp_path)
    records, unreadable, _ = drop.read(drop.pending()[0])
    assert records == [{"sku": "S1", "on_hand": "5"}, {"sku": "S4\nsecond line", "on_hand": "7"},
                       {"sku": "S6", "on_hand": "\x00"}, {"sku": "S7", "on_hand": "\u2028"}]
    assert unreadable == [("S2,5,extra", "line 3: 3 fields where the header has 2"),
                          ("S3", "line 5: 1 fields where the header has 2"),
                          ("caf\\xe9,8", "line 8: sku: bytes that are not UTF-8")]


@pytest.mark.parametrize(("content", "records", "unreadable"), [
    (b'sku,n,note\nA,1,"x\nB,2,y\nC,3,z\n', [],  # a quote never closed would swallow the rest of the file
     [('A,1,"x\nB,2,y\nC,3,z', "lines 2-4: not CSV: unexpected end of data (a quote is never closed)")]),
    (b'sku,n,note\nA,"1"2,x\nB,2,y\n', [{"sku": "B", "n": "2", "note": "y"}],
     [('A,"1"2,x', "line 2: not CSV: ',' expected after '\"'")]),
    (b'sku,n,note\nA,1,"x\ny"\nB,2,\n', [{"sku": "A", "n": "1", "note": "x\ny"}, {"sku": "B", "n": "2", "note": None}], []),
    (b"sku,n,note\nA,1,\"" + b"x" * 200_000 + b'"\nB,2,y\n',  # over the csv module's default field limit
     [{"sku": "A", "n": "1", "note": "x" * 200_000}, {"sku": "B", "n": "2", "note": "y"}], []),
], ids=["unclosed quote", "stray quote", "quoted line break", "200,000-character field"])
def test_csv_quoting_is_read_strictly_record_by_record(tmp_path, content, records, unreadable):
    (tmp_path / "x.csv").write_bytes(content)
    read = DropFolder(tmp_path).read(tmp_path / "x.csv")
    assert read.records == records and read.unreadable == unreadable


def test_a_json_line_python_would_bend_is_set_apart(tmp_path):
    (tmp_path / "x.jsonl").write_bytes(
        b'{"sku": "A", "n": NaN}\n{"sku": "B", "n": -Infinity}\n{"sku": "C", "n": 1e400}\n{"sku": "D", "n": 1, "n": 2}\n'
        b'{"sku": "E", "n": 1.5e300, "m": {"a": 1, "b": [1e-300]}}\n'
    )
    records, unreadable, _ = DropFolder(tmp_path, ".jsonl").read(tmp_path / "x.jsonl")
    assert records == [{"sku": "E", "n": 1.5e300, "m": {"a": 1, "b": [1e-300]}}]
    assert [why for _, why in unreadable] == [
        "line 1: not JSON: NaN is no JSON number", "line 2: not JSON: -Infinity is no JSON number",
        "line 3: not JSON: 1e400 is beyond the range of a double", "line 4: not JSON: an object names 'n' twice",
    ]


@pytest.mark.parametrize(("content", "reason"), [
    (b"sku,sku,on_hand\nS1,S1,5\n", "line 1: the header names 'sku' twice, so no row of the file can be read"),
    (b"sku,on_h\xe4nd\nS1,5\n", "line 1: the header holds bytes that are not UTF-8, so no row of the file can be read"),
    ("sku,on_hand\nS1,5\n".encode("utf-16-le"), "line 1: the header holds a NUL byte (a file in UTF-16?)"),
])
def test_a_csv_whose_header_cannot_name_its_rows_is_set_apart_whole(tmp_path, content, reason):
    (tmp_path / "x.csv").write_bytes(content)
    drop = DropFolder(tmp_path)
    records, [(line, why)], _ = drop.read(drop.pending()[0])
    assert records == [] and why.startswith(reason) and "under a new name" in why and line.replace("\x00", "").startswith("sku,")


def test_an_empty_file_holds_no_record(tmp_path):
    (tmp_path / "x.csv").write_bytes(b"")
    (tmp_path / "y.jsonl").write_bytes(b"")
    assert DropFolder(tmp_path).read(tmp_path / "x.csv") == ([], [], [])
    assert DropFolder(tmp_path, ".jsonl").read(tmp_path / "y.jsonl") == ([], [], None)


def test_a_json_line_that_holds_no_record_is_set_apart_with_its_line_and_why(tmp_path):
    (tmp_path / "x.jsonl").write_bytes(
        b'{"sku": "S1", "note": "a\xe2\x80\xa8b"}\n'  # U+2028 inside a text: one line all the same
        b'{"sku": "S2", \n'
        b"\n"
        b'{"sku": "caf\xe9"}\r\n'
        b'{"sku": "\\ud800"}\n'  # an escaped lone surrogate is JSON: it is refused later, naming its field
        b"[1, 2]\n"  # JSON, but not an object: refused later
    )
    records, unreadable, columns = DropFolder(tmp_path, ".jsonl").read(tmp_path / "x.jsonl")
    assert records == [{"sku": "S1", "note": "a\u2028b"}, {"sku": "\ud800"}, [1, 2]] and columns is None
    assert unreadable == [('{"sku": "S2", ', "line 2: not JSON: Expecting property name enclosed in double quotes at column 15"),
                          ('{"sku": "caf\\xe9"}\r', "line 4: bytes that are not UTF-8")]


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
    assert drop.read(drop.pending()[0]).records == [{"sku": "007", "on_hand": None}, {"sku": "S2", "on_hand": "5"}]


def test_a_csv_frame_is_text_in_the_header_order_as_pandas_reads_it(tmp_path):
    (tmp_path / "x.csv").write_text("sku,on_hand,note\n007,5,\nS2,,\n")
    (tmp_path / "y.csv").write_text("sku,on_hand\n")
    for file in (tmp_path / "x.csv", tmp_path / "y.csv"):
        frame = DropFolder(tmp_path).read(file).frame()
        assert frame.equals(pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""]))
        assert all(isinstance(dtype, pd.StringDtype) for dtype in frame.dtypes)  # a column of blanks too


def test_bad_configuration_names_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="suffix '.xlsx' is not supported"):
        DropFolder(tmp_path, ".xlsx")
    with pytest.raises(ConfigError, match="does not exist"):
        DropFolder(tmp_path / "missing").pending()


def test_writers_leave_no_temporary_file(tmp_path):
    write_jsonl(frame(3), tmp_path / "out" / "x.jsonl")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.jsonl"]
    assert len(pd.read_json(tmp_path / "out" / "x.jsonl", lines=True)) == 3


def test_a_csv_postgresql_wrote_is_read_back_value_for_value(tmp_path):
    """PostgreSQL's own CSV writer (`COPY … TO`), not ours: quotes, separators, line breaks, non-ASCII."""
    import sqlalchemy as sa

    from tests.conftest import service_url

    values = ["plain", "a,b", 'say "hi"', "two\nlines", "cr\rhere", "crlf\r\nhere", "ü€😀", "\u2028", "back\\slash", " lead", "", None]
    engine = sa.create_engine(service_url("postgresql"))
    with engine.connect() as conn, open(tmp_path / "x.csv", "wb") as out:
        rows = ", ".join(f"({n}, :v{n})" for n in range(len(values)))
        query = sa.text(f"SELECT n, v FROM (VALUES {rows}) AS t (n, v) ORDER BY n").bindparams(**{f"v{n}": v for n, v in enumerate(values)})
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
        with conn.connection.driver_connection.cursor().copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
            for block in copy:
                out.write(block)
    engine.dispose()
    records, unreadable, _ = DropFolder(tmp_path).read(tmp_path / "x.csv")
    assert unreadable == [] and records == [{"n": str(n), "v": v or None} for n, v in enumerate(values)]

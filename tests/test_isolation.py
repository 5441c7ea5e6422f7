"""Row isolation and admission, called directly with small frames."""

from __future__ import annotations

import pandas as pd
import pytest
from interlink.data_checks.policy import SchemaContract
from interlink.tasks.admit import Pages, admit, missing, records_frame
from interlink.tasks.isolate import isolated
from interlink.tasks.quarantine import quarantine, settle

from interlink.deadletter import DeadLetters

CONTRACT = SchemaContract(version="1", fields={"id": "string", "name": "string", "phone": "string", "tags": "list", "updated_at": "string"})


def to_number(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(n=frame["v"].astype(float))


def test_a_step_that_fails_on_some_records_runs_on_the_rest_and_names_the_others():
    frame = pd.DataFrame({"k": ["a", "b", "b", "c", None, "d"], "v": ["1", "2", "x", "4", "5", "y"]})
    calls = []
    out, failures = isolated(lambda part: calls.append(len(part)) or to_number(part), frame, frame["k"])
    assert list(out.index) == [0, 3, 4] and list(out["n"]) == [1.0, 4.0, 5.0]
    assert list(failures.index) == [1, 2, 5]  # both records of key b go together
    assert failures["reason"].str.startswith("ValueError: could not convert string to float").all()
    assert len(calls) < 2 * len(frame)  # bisected, not one call per record


def test_a_step_that_fails_for_a_system_reason_is_not_isolated():
    def down(part: pd.DataFrame) -> pd.DataFrame:
        raise ConnectionError("finance is down")

    with pytest.raises(ConnectionError):
        isolated(down, pd.DataFrame({"v": ["1", "2"]}))


def test_a_step_that_fails_on_every_record_dead_letters_each():
    out, failures = isolated(to_number, pd.DataFrame({"v": ["x", "y", "z"]}))
    assert out.empty and list(failures.index) == [0, 1, 2]


def test_admission_refuses_what_breaks_the_contract_or_lies_in_the_future_and_fills_missing_fields():
    frame, refused = records_frame([
        {"id": "1", "name": "A", "tags": ["x"], "updated_at": "2026-01-01T00:00:00Z"},
        "not an object",
        {"id": "2", "name": {"first": "B"}, "tags": None, "updated_at": "2026-01-01T00:00:00Z"},
        {"id": "3", "name": "C", "tags": "x", "updated_at": "2026-01-01T00:00:00Z"},
        {"id": "4", "name": "D", "tags": [], "updated_at": "2200-01-01T00:00:00Z"},
        [1, 2],
    ])
    assert [why for _, why in refused] == ["the record is text, not an object", "the record is a list, not an object"]
    raw, failures = admit(frame, CONTRACT, "updated_at")
    assert raw["phone"].isna().all()  # a field no record had is a null, not a KeyError
    assert failures.to_dict()["reason"] == {
        1: "name: an object where the contract says string",
        2: "tags: text where the contract says list",
        3: "updated_at: 2200-01-01T00:00:00Z is in the future (more than 24 h ahead): it would move the watermark past every later change",
    }
    assert failures.at[1, "values"] == {"name": {"first": "B"}}


def test_a_record_whose_text_holds_a_lone_surrogate_is_refused_by_name_and_the_rest_become_arrow_text():
    odd = {"id": "2", "name": "Ada \ud800", "city": "Ber\udfffl\ud800n", "tags": {"x": "\ud800"}}
    frame, refused = records_frame([{"id": "1", "name": "Ada", "tags": None}, odd, {"id": "3", "name": "Bo", "tags": None}])
    assert refused == [(odd, "name: holds a lone surrogate, which is not valid Unicode text; city: holds a lone surrogate, which is not valid Unicode text")]
    assert frame["id"].tolist() == ["1", "3"] and frame["name"].tolist() == ["Ada", "Bo"]
    assert isinstance(frame["name"].array, pd.arrays.ArrowStringArray)

    mixed = {"id": "5", "name": "Bo \udfff"}  # in a column of mixed values (an object column), not Arrow text
    frame, refused = records_frame([{"id": "4", "name": {"first": "A"}}, mixed, {"id": "6", "name": 7}])
    assert refused == [(mixed, "name: holds a lone surrogate, which is not valid Unicode text")]
    assert frame["id"].tolist() == ["4", "6"] and frame.index.tolist() == [0, 1]


PAGES = {  # pages of records as sources send them; each must become the frame pandas makes of all of them
    "text": [[{"id": "1", "name": "Ada"}, {"id": "2", "name": None}], [{"id": "3", "name": "Bo\x00\u00e9\U0001f600"}]],
    "numbers": [[{"id": 1, "n": 1.5, "ok": True}, {"id": 2, "n": None, "ok": None}], [{"id": 3, "n": float("nan"), "ok": False}]],
    "integers, then a number": [[{"id": 1, "n": 2}], [{"id": 2, "n": 2.5}]],
    "fields that come and go": [[{"id": "1"}, {"id": "2", "late": "x"}, {"late": "y"}], [{"id": "3", "other": 4}], [{}]],
    "text, then an integer": [[{"id": "1", "v": "a"}], [{"id": "2", "v": 7}]],
    "mixed on one page": [[{"id": "1", "v": "a"}, {"id": "2", "v": 7}, {"id": "3", "v": True}]],
    "a boolean, then integers": [[{"id": 1, "v": True}], [{"id": 2, "v": 1}]],
    "beyond 64 bits": [[{"id": 1, "v": 2**64}, {"id": 2, "v": -(2**63)}]],
    "nested": [[{"id": "1", "tags": ["x"], "address": {"city": "Berlin"}}], [{"id": "2", "tags": [], "address": {}}]],
    "nulls only": [[{"id": None}, {"id": None}]],
    "empty page": [[], [{"id": "1"}]],
}


@pytest.mark.parametrize("pages", PAGES.values(), ids=PAGES.keys())
def test_pages_become_the_frame_pandas_makes_of_their_records(pages):
    gathered = Pages()
    for page in pages:
        gathered.add(page)
    expected = pd.concat([pd.DataFrame.from_records(page) for page in pages], ignore_index=True)
    got = gathered.frame()
    assert gathered.refused == []
    assert got.columns.tolist() == expected.columns.tolist() and len(got) == len(expected)
    for column in got.columns:  # the same values; a type may differ only where pandas' pages disagreed
        assert [None if missing(v) else v for v in got[column]] == [None if missing(v) else v for v in expected[column]]
    single = [pd.DataFrame.from_records(page) for page in pages if page]
    if all(s.dtypes.equals(single[0].dtypes) for s in single):
        pd.testing.assert_frame_equal(got, expected)


def test_keys_longer_than_the_store_holds_stay_apart_and_settle(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    raw = pd.DataFrame({"id": ["A" * 200 + "1", "A" * 200 + "2"], "name": ["x", "y"]})
    failures = pd.DataFrame({"reason": ["bad", "bad"], "values": [{}, {}]}, index=raw.index)
    assert quarantine(url, "t", raw, failures, raw["id"], "id", "check", None) == 2
    letters = DeadLetters(url).entries("t", "open")
    assert len(letters) == 2 and {letter["payload"][0]["name"] for letter in letters} == {"x", "y"}
    assert all(len(letter["record_key"]) <= 200 for letter in letters)
    assert settle(url, "t", raw["id"].iloc[:1], "resolved") == 1
    assert [letter["payload"][0]["name"] for letter in DeadLetters(url).entries("t", "open")] == ["y"]

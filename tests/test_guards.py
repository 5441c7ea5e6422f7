"""The guards as pure functions: schema drift, volume, staleness; and masking."""

from datetime import UTC, datetime, timedelta

import pandas as pd
from interlink.connectors.masking import mask, mask_frame
from interlink.data_checks.guards import observed_types, schema_diff, staleness, volume_problem
from interlink.data_checks.policy import Gate, SchemaContract


def test_observed_types_are_json_types():
    frame = pd.DataFrame([{"s": "x", "i": 1, "f": 1.5, "n": None, "l": [1], "o": {"a": 1}, "b": True}] * 2)
    assert observed_types(frame) == {"s": "string", "i": "integer", "f": "number", "n": "null", "l": "list", "o": "object", "b": "boolean"}


def test_schema_diff_names_new_missing_and_retyped_fields():
    contract = SchemaContract(version="3", fields={"id": "string", "qty": "integer", "price": "number", "gone": "string"})
    frame = pd.DataFrame({"id": ["a"], "qty": ["7"], "price": [3], "extra": [True]})
    assert schema_diff(frame, contract) == [
        "new field 'extra' (boolean)",
        "missing field 'gone'",
        "field 'qty' is string, contract 3 says integer",
    ]  # an integer where a number is expected is fine, and so is an all-null column


def test_volume_needs_history_then_catches_a_drop():
    gate = Gate(volume_drop=0.5, volume_min_runs=3, volume_history=5)
    assert volume_problem(10, [100, 100], gate) is None  # too little history to judge
    assert volume_problem(60, [100, 90, 120, 5], gate) is None
    assert volume_problem(40, [100, 90, 120, 5], gate).startswith("volume dropped: 40 rows read, expected at least 50% of the median 95")
    assert volume_problem(0, [100] * 3, Gate(volume_drop=None)) is None  # off unless declared


def test_staleness_warns_when_the_newest_record_is_too_old():
    now = datetime(2026, 11, 22, tzinfo=UTC)
    frame = pd.DataFrame({"updated_at": ["2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z"]})
    assert staleness(frame, "updated_at", timedelta(days=2), now) is None
    assert "is 2026-11-21T00:00:00+00:00, 1 day, 0:00:00 old (more than 12:00:00)" in staleness(frame, "updated_at", timedelta(hours=12), now)
    assert staleness(frame, "updated_at", None, now) is None


def test_masking_keeps_the_shape_not_the_value():
    assert mask("Anna.Smith@example.com") == "A***@example.com"
    assert mask("+4930123456") == "+***" and mask(None) is None
    frame = pd.DataFrame({"email": ["x@y.org"], "name": ["Bo"]})
    assert mask_frame(frame, ("email", "phone")).to_dict("records") == [{"email": "x***@y.org", "name": "Bo"}]

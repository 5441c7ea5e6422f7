"""Enrich (billing terms by country) and the data-check gate (which rows fail, and why)."""

import random
import re
import sys

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
import pytest
from interlink.data_checks.customers import EMAIL, WHITESPACE, billing_customers
from interlink.data_checks.gate import build_docs, context, validate
from interlink.flows.crm_to_billing import add_billing_terms
from interlink.tasks.check import check

TERMS = {"DE": {"currency": "EUR", "tax_rate": 0.19}, "GB": {"currency": "GBP", "tax_rate": 0.2}, "ZZ": None}
TEXT = ["crm_id", "name", "email", "phone", "country", "currency"]


def test_the_email_rule_is_checked_by_re2_on_arrow_text_and_agrees_with_pythons_re():
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if re.fullmatch(r"\s", chr(c))]
    assert spaces == [chr(c) for c in range(sys.maxunicode + 1) if re.fullmatch(f"[{WHITESPACE}]", chr(c))]
    emails = ["a@b.de", "x@y.DE", "ü@ö.de", "a@b.de\n", "@b.de", "a@@b.de", *(f"a{s}b@c.de" for s in spaces), *(f"ab@c{s}.de" for s in spaces)]
    arrow, python = pd.Series(emails), pd.Series(emails, dtype=object)
    assert isinstance(arrow.array, pd.arrays.ArrowStringArray)
    assert not arrow[~arrow.str.contains("\n", regex=False)].array._needs_python_regex(EMAIL)  # `$` needs `re` only by a newline
    assert arrow.str.contains(EMAIL).tolist() == python.str.contains(EMAIL).tolist() == [True, False, True, True] + [False] * (2 + 2 * len(spaces))


def terms_input() -> pd.DataFrame:
    return pd.DataFrame(
        {"crm_id": ["C1", "C2", "C3", "C4"], "country": pd.array(["DE", "ZZ", None, "GB"], dtype="string")},
        index=[40, 41, 42, 43],
    )


def test_known_country_gets_currency_and_tax_rate():
    rows = add_billing_terms.fn(terms_input(), TERMS)
    assert (rows.loc[40, "currency"], rows.loc[40, "tax_rate"]) == ("EUR", 0.19)
    assert (rows.loc[43, "currency"], rows.loc[43, "tax_rate"]) == ("GBP", 0.2)


def test_unknown_and_missing_country_get_nulls():
    rows = add_billing_terms.fn(terms_input(), TERMS)
    assert rows.loc[[41, 42], "currency"].isna().all()
    assert rows.loc[[41, 42], "tax_rate"].isna().all()


def test_country_never_looked_up_gets_nulls():
    rows = add_billing_terms.fn(terms_input(), {"DE": TERMS["DE"]})
    assert pd.isna(rows.loc[43, "currency"]) and pd.isna(rows.loc[43, "tax_rate"])


def test_enrich_keeps_rows_index_and_columns():
    before = terms_input()
    rows = add_billing_terms.fn(before, TERMS)
    assert list(rows.index) == [40, 41, 42, 43]
    assert list(rows.columns) == ["crm_id", "country", "currency", "tax_rate"]
    assert rows["tax_rate"].dtype == "float64"
    pd.testing.assert_frame_equal(rows[["crm_id", "country"]], before)


def ref_add_billing_terms(rows: pd.DataFrame, terms: dict) -> pd.DataFrame:
    """Today's enrichment, row by row through `Series.map`: the reference `add_billing_terms` is held to."""
    countries = set(rows["country"].dropna())
    known = {code: t for code, t in terms.items() if t and code in countries}
    for code, t in known.items():
        try:
            float(t["tax_rate"] if t.get("tax_rate") is not None else "nan")
        except (TypeError, ValueError):
            raise ValueError(f"tax_rate: finance answered {str(t['tax_rate'])[:40]!r} for {code}, not a number") from None
    return rows.assign(
        currency=rows["country"].map({c: t["currency"] for c, t in known.items()}).astype("string"),
        tax_rate=rows["country"].map({c: t["tax_rate"] for c, t in known.items()}).astype("float64"),
    )


ANSWERS = [None, {"currency": "EUR", "tax_rate": 0.19}, {"currency": "SEK", "tax_rate": "0.25"}, {"currency": 978, "tax_rate": 0},
           {"currency": None, "tax_rate": None}, {"currency": "CHF", "tax_rate": " 0.081 "}, {"currency": "X", "tax_rate": "12abc"},
           {"currency": "Y", "tax_rate": [0.2]}, {"tax_rate": 0.2}, {"currency": "Z"}, {"currency": "USD", "tax_rate": True}]


@pytest.mark.parametrize("seed", range(40))
def test_billing_terms_are_todays_for_any_answers_and_countries(seed):
    rng = random.Random(seed)
    codes = ["DE", "SE", "CH", "US", "ZZ", "QQ"]
    terms = {code: rng.choice(ANSWERS) for code in rng.sample(codes, rng.randint(0, len(codes)))}
    countries = rng.choices([*codes, None], k=50)
    rows = pd.DataFrame({"crm_id": [f"C{n}" for n in range(50)], "country": pd.array(countries, dtype=rng.choice(["string", "str", object]))},
                        index=rng.sample(range(500), 50))
    try:
        expected = ref_add_billing_terms(rows, terms)
    except Exception as exc:  # the same error, for the same answers
        with pytest.raises(type(exc), match=re.escape(str(exc))):
            add_billing_terms.fn(rows, terms)
    else:
        pd.testing.assert_frame_equal(add_billing_terms.fn(rows, terms), expected)


# the gate


def row(crm_id: str, **changes) -> dict:
    clean = {
        "crm_id": crm_id, "name": "Anna Smith", "email": "anna@example.com", "phone": "+49301234567",
        "country": "DE", "currency": "EUR", "tax_rate": 0.19, "crm_updated_at": pd.Timestamp("2026-09-01", tz="UTC"),
    }
    return {**clean, **changes}


def batch(*rows: dict, start: int = 200) -> pd.DataFrame:
    """Rows shaped like the transform + enrich output, indexed from `start` like a raw frame."""
    frame = pd.DataFrame(list(rows), index=range(start, start + len(rows)))
    return frame.astype({c: "string" for c in TEXT} | {"tax_rate": "float64"})


@pytest.fixture
def ctx(tmp_path):
    return context(tmp_path)


def test_clean_rows_pass(ctx):
    result = validate(ctx, batch(row("C1"), row("C2", phone=None)), billing_customers(), "clean")
    assert result.success
    assert result.row_failures.empty and result.batch_failures == []
    assert all(e["success"] for e in result.expectations)


@pytest.mark.parametrize(
    ("change", "expectation", "column", "value"),
    [
        ({"email": "anna.example.com"}, "expect_column_values_to_match_regex(email)", "email", "anna.example.com"),
        ({"email": "anna@@example.com"}, "expect_column_values_to_match_regex(email)", "email", "anna@@example.com"),
        ({"currency": None}, "expect_column_values_to_not_be_null(currency)", "currency", None),
        ({"tax_rate": 0.9}, "expect_column_values_to_be_between(tax_rate)", "tax_rate", 0.9),
        ({"phone": "(555) 123-4567"}, "expect_column_values_to_match_regex(phone)", "phone", "(555) 123-4567"),
        ({"phone": "+12"}, "expect_column_values_to_match_regex(phone)", "phone", "+12"),
        ({"phone": "+4٩١٢٣٤٥٦٧٨"}, "expect_column_values_to_match_regex(phone)", "phone", "+4٩١٢٣٤٥٦٧٨"),  # digits: ASCII only
        ({"phone": "+４９３０１２３４５６７"}, "expect_column_values_to_match_regex(phone)", "phone", "+４９３０１２３４５６７"),
        ({"name": None}, "expect_column_values_to_not_be_null(name)", "name", None),
        ({"crm_updated_at": pd.NaT}, "expect_column_values_to_not_be_null(crm_updated_at)", "crm_updated_at", None),
    ],
)
def test_a_bad_row_is_named_with_its_reason_and_value(ctx, change, expectation, column, value):
    frame = batch(row("C1"), row("C2", **change), row("C3"))
    result = validate(ctx, frame, billing_customers(), "bad-row")
    failures = result.row_failures
    assert list(failures.index) == [201]
    assert expectation in failures.at[201, "reason"]
    assert ";" not in failures.at[201, "reason"]
    offending = failures.at[201, "values"]
    assert list(offending) == [column]
    assert (pd.isna(offending[column]) if value is None else offending[column] == value)
    assert not result.success and result.batch_failures == []


def test_reason_carries_the_expectation_description(ctx):
    result = validate(ctx, batch(row("C1", currency=None)), billing_customers(), "described")
    assert result.row_failures.at[200, "reason"] == (
        "expect_column_values_to_not_be_null(currency): country is known to the finance API"
    )


def test_duplicate_crm_id_fails_uniqueness_for_both_rows(ctx):
    frame = batch(row("C1"), row("C2"), row("C1", name="Anna B. Smith"))
    result = validate(ctx, frame, billing_customers(), "duplicates")
    failures = result.row_failures
    assert sorted(failures.index) == [200, 202]
    for index in (200, 202):
        assert "expect_column_values_to_be_unique(crm_id)" in failures.at[index, "reason"]
        assert failures.at[index, "values"] == {"crm_id": "C1"}


def test_a_row_with_two_problems_has_both_reasons(ctx):
    frame = batch(row("C1"), row("C2", email="not-an-email", tax_rate=0.9))
    result = validate(ctx, frame, billing_customers(), "two-problems")
    reasons = result.row_failures.at[201, "reason"].split("; ")
    assert len(reasons) == 2
    assert any(r.startswith("expect_column_values_to_match_regex(email)") for r in reasons)
    assert any(r.startswith("expect_column_values_to_be_between(tax_rate)") for r in reasons)
    assert result.row_failures.at[201, "values"] == {"email": "not-an-email", "tax_rate": 0.9}
    assert list(result.row_failures.index) == [201]


def test_failure_counts_are_listed_per_expectation(ctx):
    frame = batch(row("C1", email="bad"), row("C2", email="worse"), row("C3"))
    result = validate(ctx, frame, billing_customers(), "counts")
    email = [e for e in result.expectations if e["expectation"] == "expect_column_values_to_match_regex" and e["column"] == "email"]
    assert email == [{"expectation": "expect_column_values_to_match_regex", "column": "email", "success": False, "unexpected": 2}]
    assert len(result.expectations) == len(billing_customers().expectations)


def row_count_suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name="at_least_ten_rows",
        expectations=[
            gxe.ExpectTableRowCountToBeBetween(min_value=10, description="a full batch"),
            gxe.ExpectColumnValuesToNotBeNull(column="currency"),
        ],
    )


def test_batch_level_expectation_is_a_batch_failure(ctx):
    result = validate(ctx, batch(row("C1"), row("C2", currency=None)), row_count_suite(), "small")
    assert len(result.batch_failures) == 1
    assert result.batch_failures[0].startswith("expect_table_row_count_to_be_between")
    assert "a full batch" in result.batch_failures[0]
    assert list(result.row_failures.index) == [201]
    assert not result.success


def test_check_reports_a_batch_failure_for_the_gate_to_decide(tmp_path):
    validation = check(batch(row("C1")), row_count_suite, tmp_path, "check-small")
    assert [f.split("(")[0] for f in validation.batch_failures] == ["expect_table_row_count_to_be_between"]


def test_check_returns_row_failures_without_raising(tmp_path):
    validation = check(batch(row("C1"), row("C2", tax_rate=0.9)), billing_customers, tmp_path, "check-rows")
    assert list(validation.row_failures.index) == [201]
    assert validation.batch_failures == []


def test_build_docs_renders_the_run_validation(ctx, tmp_path):
    validate(ctx, batch(row("C1"), row("C2", email="bad")), billing_customers(), "docs-run")
    index = build_docs(ctx, "docs-run")
    assert index.name == "index.html" and index.is_file()
    assert index.parent == tmp_path / "reports"
    pages = list((tmp_path / "reports" / "validations").rglob("*.html"))
    assert pages and all("docs-run" in p.parts for p in pages)
    assert "docs-run" in index.read_text()


def test_build_docs_renders_only_the_named_run(ctx, tmp_path):
    validate(ctx, batch(row("C1")), billing_customers(), "first-run")
    validate(ctx, batch(row("C1")), billing_customers(), "second-run")
    build_docs(ctx, "second-run")
    runs = {p.parent.parent.name for p in (tmp_path / "reports" / "validations").rglob("*.html")}
    assert runs == {"second-run"}


def test_a_batch_is_validated_without_gx_fingerprinting_its_values(ctx, monkeypatch):
    from great_expectations.execution_engine import pandas_execution_engine

    hashed = []
    monkeypatch.setattr(pandas_execution_engine, "hash_pandas_dataframe", lambda df: hashed.append(len(df)) or "")
    result = validate(ctx, batch(row("C1"), row("C2", email="bad")), billing_customers(), "unhashed")
    assert hashed == [] and list(result.row_failures.index) == [201]
    stored = ctx.validation_results_store.get(next(k for k in ctx.validation_results_store.list_keys() if k.run_id.run_name == "unhashed"))
    assert "pandas_data_fingerprint" not in stored.meta["batch_markers"]


def test_every_chunk_of_a_run_reaches_the_disk_once_and_only_masked(ctx, monkeypatch):
    store = ctx.validation_results_store
    written = []
    set_value = store.store_backend.set
    monkeypatch.setattr(store.store_backend, "set", lambda key, value, **kw: written.append((key, value)) or set_value(key, value, **kw))
    for number in range(4):
        chunk = batch(row(f"C{number}", email=f"leak{number}@nowhere", phone="+0123"), start=number * 10)
        validate(ctx, chunk, billing_customers(), "chunked", sensitive=("email", "phone"))
    keys = [store.key_to_tuple(k) for k in store.list_keys() if k.run_id.run_name == "chunked"]
    assert len(keys) == 4 and sorted(k for k, _ in written) == sorted(keys)
    assert not any("leak" in text or "+0123" in text for _, text in written)
    for key in keys:
        failed = [o.result for o in store.get(store.tuple_to_key(key)).results if not o.success]
        shown = [v for r in failed for v in r.get("partial_unexpected_list", []) + r.get("unexpected_list", [])]
        assert {"l***@nowhere", "+***"} <= set(shown)


def test_an_aggregate_over_a_sensitive_column_is_stored_masked(ctx):
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="distinct_emails")
    suite.add_expectation(gx.expectations.ExpectColumnDistinctValuesToBeInSet(column="email", value_set=["x@y.z"]))
    validate(ctx, batch(row("C1", email="secret@nowhere")), suite, "aggregate", sensitive=("email",))
    key = next(k for k in ctx.validation_results_store.list_keys() if k.run_id.run_name == "aggregate")
    text = ctx.validation_results_store.store_backend.get(ctx.validation_results_store.key_to_tuple(key))
    assert "secret" not in text and "s***@nowhere" in text


def test_a_project_made_before_masking_keeps_its_results_in_the_masking_store(tmp_path):
    import great_expectations as gx
    from interlink.data_checks.masked_results import MaskingResultsStore

    gx.get_context(mode="file", project_root_dir=str(tmp_path / "gx"))
    assert isinstance(context(tmp_path).validation_results_store, MaskingResultsStore)
    assert "interlink.data_checks.masked_results" in (tmp_path / "gx" / "gx" / "great_expectations.yml").read_text()  # as GX keeps it


def test_a_suite_another_process_stored_again_is_stored_again_and_validated(ctx):
    """Each store of a suite gives its expectations new ids, so a definition this process holds goes stale when another
    process (a partition of the same run) stores the suite; GX's run finds it and the batch is still validated."""
    from interlink.data_checks.gate import _definition, _store_definition

    first = validate(ctx, batch(row("C1"), row("C2", email="bad")), billing_customers(), "restored")
    held = _definition(ctx, billing_customers())
    _store_definition(ctx, billing_customers())  # as the other process does
    assert not held.is_fresh().success
    again = validate(ctx, batch(row("C3"), row("C4", email="bad")), billing_customers(), "restored")
    assert list(first.row_failures.index) == [201] and list(again.row_failures.index) == [201]
    assert _definition(ctx, billing_customers()).is_fresh().success

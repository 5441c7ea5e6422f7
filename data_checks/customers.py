"""The contract a batch of `billing.customers` rows must meet before delivery."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import great_expectations as gx

# Python's `\s`, its characters spelled out (not as `\u` escapes, which RE2 lacks), so that pandas checks Arrow text
# with RE2 at once, not with Python's `re` value by value.
WHITESPACE = "\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EMAIL = rf"^[^@{WHITESPACE}]+@[^@{WHITESPACE}]+\.[a-z]{{2,}}$"
E164 = r"^\+[1-9][0-9]{7,14}$"  # ASCII digits under any regex engine (Python's `\d` takes any script's, RE2's not)


def billing_customers() -> gx.ExpectationSuite:
    import great_expectations as gx  # only when a batch is checked: its import costs seconds
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name="billing_customers",
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="crm_id", description="every customer has a CRM id"),
            gxe.ExpectColumnValuesToBeUnique(column="crm_id", description="one row per CRM id"),
            gxe.ExpectColumnValuesToNotBeNull(column="name", description="customer has a name"),
            gxe.ExpectColumnValuesToNotBeNull(column="email", description="customer has an email"),
            gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL, description="email is well formed"),
            gxe.ExpectColumnValuesToMatchRegex(column="phone", regex=E164, description="phone is E.164 (or absent)"),
            gxe.ExpectColumnValuesToNotBeNull(column="country", description="customer has a country"),
            gxe.ExpectColumnValuesToNotBeNull(column="currency", description="country is known to the finance API"),
            gxe.ExpectColumnValuesToBeBetween(column="tax_rate", min_value=0, max_value=0.5, description="tax rate is a plausible share"),
            gxe.ExpectColumnValuesToNotBeNull(column="crm_updated_at", description="record has a valid update time"),
        ],
    )

"""The contract a batch of `billing.invoices` rows must meet before delivery."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import great_expectations as gx

CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN")
STATUSES = ("draft", "open", "paid", "void")
MAX_AMOUNT = 1_000_000_000  # within the target's NUMERIC(12, 2)
MAX_NOTES = 500  # the target column's length


def billing_invoices() -> gx.ExpectationSuite:
    import great_expectations as gx  # only when a batch is checked: its import costs seconds
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name="billing_invoices",
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="invoice_id", description="every invoice has an ERP id"),
            gxe.ExpectColumnValuesToBeUnique(column="invoice_id", description="one row per invoice"),
            gxe.ExpectColumnValuesToNotBeNull(column="customer_id", description="invoice has a customer"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="customer_id", max_value=32, description="customer id fits 32 characters"),
            gxe.ExpectColumnValuesToNotBeNull(column="amount", description="amount is a number"),
            gxe.ExpectColumnValuesToBeBetween(
                column="amount", min_value=0, max_value=MAX_AMOUNT, description="amount is not negative nor implausibly large"
            ),
            gxe.ExpectColumnValuesToBeInSet(column="currency", value_set=list(CURRENCIES), description="a known currency"),
            gxe.ExpectColumnValuesToNotBeNull(column="currency", description="invoice has a currency"),
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES), description="a known invoice status"),
            gxe.ExpectColumnValueLengthsToBeBetween(column="notes", max_value=MAX_NOTES, description="notes fit 500 characters"),
            gxe.ExpectColumnValuesToNotMatchRegex(column="notes", regex=r"\x00", description="notes hold no NUL character"),
            gxe.ExpectColumnValuesToBeInSet(column="due_date_unreadable", value_set=[False], description="due date is a date (or absent)"),
            gxe.ExpectColumnValuesToNotBeNull(column="erp_updated_at", description="invoice has a valid update time"),
        ],
    )

"""The contract a batch of ERP order rows must meet before delivery."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import great_expectations as gx

from interlink.data_checks.customers import EMAIL

ORDER_STATUSES = ("pending", "paid", "shipped", "cancelled")


def erp_orders() -> gx.ExpectationSuite:
    import great_expectations as gx  # only when a batch is checked: its import costs seconds
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name="erp_orders",
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="order_id", description="every order has an id"),
            gxe.ExpectColumnValuesToBeUnique(column="order_id", description="one row per order"),
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(ORDER_STATUSES), description="a known order status"),
            gxe.ExpectColumnValuesToNotBeNull(column="customer_email", description="order has a customer email"),
            gxe.ExpectColumnValuesToMatchRegex(column="customer_email", regex=EMAIL, description="email is well formed"),
            gxe.ExpectColumnValuesToNotBeNull(column="eur_rate", description="currency is known to the rates API"),
            gxe.ExpectColumnValuesToBeBetween(column="line_count", min_value=1, description="order has lines"),
            gxe.ExpectColumnValuesToBeBetween(column="min_quantity", min_value=1, description="every line orders at least 1"),
            gxe.ExpectColumnValuesToNotBeNull(column="total_eur", description="every line has a quantity and a price"),
            gxe.ExpectColumnValuesToBeBetween(column="total_eur", min_value=0, description="amount is not negative"),
            gxe.ExpectColumnValuesToNotBeNull(column="placed_at", description="order has a valid placing time"),
            gxe.ExpectColumnValuesToNotBeNull(column="updated_at", description="order has a valid update time"),
        ],
    )

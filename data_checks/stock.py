"""The contract a batch of stock levels must meet before it reaches the storefront."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import great_expectations as gx

SKU = r"^SKU-\d{5}$"


def stock_levels() -> gx.ExpectationSuite:
    import great_expectations as gx  # only when a batch is checked: its import costs seconds
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name="stock_levels",
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="sku", description="every row names a SKU"),
            gxe.ExpectColumnValuesToMatchRegex(column="sku", regex=SKU, description="SKU is well formed"),
            gxe.ExpectColumnValuesToNotBeNull(column="stock", description="stock is a whole number in every warehouse"),
            gxe.ExpectColumnValuesToBeBetween(column="stock", min_value=0, max_value=1_000_000, description="stock is plausible"),
        ],
    )

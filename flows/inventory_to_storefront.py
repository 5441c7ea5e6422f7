"""ERP → storefront: stock levels from the ERP's CSV exports, sent for the SKUs whose stock changed."""

import pandas as pd
from interlink.data_checks.policy import Gate, SchemaContract
from interlink.data_checks.stock import stock_levels
from interlink.flows.pipeline import Pipeline
from interlink.tasks.ingest import FolderSource
from interlink.tasks.send import RestTarget
from interlink.tasks.transform import blank_to_na
from prefect import task
from prefect.cache_policies import NO_CACHE


@task(name="transform", cache_policy=NO_CACHE)
def to_stock_levels(raw: pd.DataFrame) -> pd.DataFrame:
    """ERP stock export rows (one per SKU and warehouse) → one stock level per SKU.

    Each row keeps the index of the SKU's first export row. A count that is not a whole
    number makes the SKU's stock missing, for the checks to name.
    """
    sku = blank_to_na(raw["sku"]).str.upper()
    on_hand = pd.to_numeric(raw["on_hand"], errors="coerce")
    on_hand = on_hand.where(on_hand == on_hand.round())
    frame = pd.DataFrame({"sku": sku, "on_hand": on_hand, "first": raw.index})
    levels = frame.groupby("sku", sort=True).agg(
        stock=("on_hand", lambda s: s.sum() if s.notna().all() else float("nan")), first=("first", "min")
    )
    levels = levels.reset_index().set_index("first")
    levels.index.name = None
    return levels.astype({"stock": "Int64"})


PIPELINE = Pipeline(
    name="inventory_to_storefront",
    source=FolderSource(connection="erp_stock", suffix=".csv"),
    source_key="sku",
    transform=to_stock_levels,
    suite=stock_levels,
    contract=SchemaContract(version="1", fields={f: "string" for f in ("sku", "warehouse", "on_hand", "exported_at")}),
    gate=Gate(volume_drop=0.5, age_field="exported_at"),  # a truncated export fails instead of being half-sent
    key="sku",
    target=RestTarget(connection="storefront", path="/products/{sku}", key="sku", fields=("stock",)),
)

"""ERP → storefront: stock levels from the ERP's CSV exports, sent for the SKUs whose stock changed."""

from data_checks.policy import Gate, SchemaContract
from data_checks.stock import stock_levels
from flows.pipeline import Pipeline
from tasks.ingest import FolderSource
from tasks.send import RestTarget
from tasks.transform import to_stock_levels

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

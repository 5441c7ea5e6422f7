"""ERP → storefront: stock levels from the ERP's CSV exports, sent for the SKUs whose stock changed."""

from data_checks.stock import stock_levels
from flows.pipeline import Pipeline, replay_flow, sync_flow
from tasks.ingest import FolderSource
from tasks.send import RestTarget
from tasks.transform import to_stock_levels

PIPELINE = Pipeline(
    name="inventory_to_storefront",
    source=FolderSource(connection="erp_stock", suffix=".csv"),
    source_key="sku",
    transform=to_stock_levels,
    suite=stock_levels,
    key="sku",
    target=RestTarget(connection="storefront", path="/products/{sku}", key="sku", fields=("stock",)),
)

sync = sync_flow(PIPELINE)
replay = replay_flow(PIPELINE)

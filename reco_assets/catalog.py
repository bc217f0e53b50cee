"""The `duckdb_catalog` asset: (re)builds every view of the DuckDB catalog (reco_assets.lakehouse.catalog)."""

import dagster as dg

from reco_assets.lakehouse import LakehouseResource
from reco_assets.lakehouse.tables import TABLES

# Every table's writer, so the catalog runs after the whole graph in a full materialization.
CATALOG_DEPS = ["bronze_movielens", *dict.fromkeys(spec.writer for spec in TABLES.values())]


@dg.asset(group_name="catalog", kinds={"duckdb"}, deps=CATALOG_DEPS)
def duckdb_catalog(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """`warehouse.duckdb`: views (not copies) over the current Delta snapshot of every bronze, silver and gold table.

    Each table write adds its own views as well; this asset rebuilds them all (after moving the data directory, say).
    """
    created, missing = lakehouse.refresh_catalog()
    if missing:
        context.log.warning(f"not materialized yet, so no view: {', '.join(missing)}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(lakehouse.warehouse_path)),
            "views": dg.MetadataValue.md("\n".join(f"- `{v}`" for v in created)),
            "view_count": dg.MetadataValue.int(len(created)),
            "missing": ", ".join(missing) or "none",
        }
    )

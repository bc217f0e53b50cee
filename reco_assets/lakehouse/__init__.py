"""The lakehouse: Delta tables (read, write, versions, maintenance), the event hours, and the DuckDB catalog."""

from reco_assets.lakehouse import duck
from reco_assets.lakehouse.delta import Commit, ConcurrentWriteError
from reco_assets.lakehouse.resource import DEFAULT_DATA_DIR, LakehouseResource, Table, retry_on_conflict

__all__ = ["DEFAULT_DATA_DIR", "Commit", "ConcurrentWriteError", "LakehouseResource", "Table", "duck",
           "retry_on_conflict"]

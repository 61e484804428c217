"""totesys OLTP -> Parquet snapshots in the landing zone + raw_totesys tables in the warehouse.

The deployment-dependent parts (the `totesys_source` resource and the schedule's cron and
status) come from etl_assets/settings.py, added to the code location by etl_assets/definitions.py.
"""

import dagster as dg

from etl_assets.totesys.assets import totesys_extraction_assets, totesys_source_tables
from etl_assets.totesys.schedules import totesys_extract_job

__all__ = ["defs", "totesys_extract_job", "totesys_extraction_assets", "totesys_source_tables"]

defs = dg.Definitions(
    assets=[*totesys_source_tables, *totesys_extraction_assets],
    jobs=[totesys_extract_job],
)

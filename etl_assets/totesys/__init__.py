"""totesys OLTP -> Parquet snapshots in the landing zone + raw_totesys tables in the warehouse."""

import dagster as dg

from etl_assets.totesys.assets import totesys_extraction_assets, totesys_source_tables
from etl_assets.totesys.schedules import build_totesys_schedule, totesys_extract_job
from etl_assets.totesys.source import build_totesys_source

defs = dg.Definitions(
    assets=[*totesys_source_tables, *totesys_extraction_assets],
    jobs=[totesys_extract_job],
    schedules=[build_totesys_schedule()],
    resources={"totesys_source": build_totesys_source()},
)

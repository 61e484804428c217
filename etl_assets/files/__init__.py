"""File-driven loads: data-lake prefixes, configured external files, CSV to Parquet."""

import dagster as dg

from etl_assets.files.assets import (
    csv_to_parquet_loads,
    datalake_loads,
    external_feed_loads,
)
from etl_assets.files.sensors import landed_files_sensors, notify_on_run_failure

defs = dg.Definitions(
    assets=[datalake_loads, external_feed_loads, csv_to_parquet_loads],
    sensors=[*landed_files_sensors, notify_on_run_failure],
)

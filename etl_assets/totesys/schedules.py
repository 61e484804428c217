"""When totesys is extracted: every five minutes by default, as the system it replaces did.

The cron is read once, where the schedule is defined (ETL_ASSETS_TOTESYS_CRON), because a
schedule's cron is part of the code location, not of a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from etl_assets.totesys.assets import GROUP, totesys_extraction_assets

DEFAULT_CRON = "*/5 * * * *"

# Sequential in one process: eleven small steps do not pay for eleven processes, and
# DuckDB (source and warehouse) allows one writer at a time anyway.
totesys_extract_job = dg.define_asset_job(
    "totesys_extract_job",
    selection=dg.AssetSelection.assets(*totesys_extraction_assets),
    executor_def=dg.in_process_executor,
    description="Extract every totesys table changed since its watermark into raw_totesys.",
    tags={"domain": GROUP},
)


def build_totesys_schedule(env: Mapping[str, str] = os.environ) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="totesys_extract_schedule",
        job=totesys_extract_job,
        cron_schedule=env.get("ETL_ASSETS_TOTESYS_CRON") or DEFAULT_CRON,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Incremental totesys extraction; dbt models follow through declarative automation.",
    )

"""When totesys is extracted: every five minutes by default, as the system it replaces did.

The cron (ETL_ASSETS_TOTESYS_CRON) is read with the rest of the deployment, once, when the code
location loads (etl_assets/settings.py), because a schedule's cron is part of the code location,
not of a run.
"""

from __future__ import annotations

import dagster as dg

from etl_assets.totesys.assets import GROUP, totesys_extraction_assets

__all__ = ["DEFAULT_CRON", "build_totesys_schedule", "totesys_extract_job"]

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


def build_totesys_schedule(cron: str = DEFAULT_CRON, status: str = "running") -> dg.ScheduleDefinition:
    """The schedule with the deployment's cron and default status (read in etl_assets/settings.py)."""
    return dg.ScheduleDefinition(
        name="totesys_extract_schedule",
        job=totesys_extract_job,
        cron_schedule=cron,
        # Until someone starts or stops it in the UI (the instance then remembers their choice).
        default_status=dg.DefaultScheduleStatus(status.upper()),
        description="Incremental totesys extraction; dbt models follow through declarative automation.",
    )

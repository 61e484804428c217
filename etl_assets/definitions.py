"""The etl_assets code location: every domain's Definitions plus shared resources."""

import dagster as dg

from etl_assets import dbt_project, files, salesforce, totesys
from etl_assets.execution import default_executor
from etl_assets.settings import build_resources

defs = dg.Definitions.merge(
    salesforce.defs,
    files.defs,
    totesys.defs,
    dbt_project.defs,
    dg.Definitions(resources=build_resources(), executor=default_executor()),
)

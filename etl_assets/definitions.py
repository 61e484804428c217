"""The etl_assets code location: every domain's Definitions plus shared resources."""

import dagster as dg

from etl_assets import files, salesforce, totesys, transform
from etl_assets.execution import default_executor
from etl_assets.resources import build_resources

defs = dg.Definitions.merge(
    salesforce.defs,
    files.defs,
    totesys.defs,
    transform.defs,
    dg.Definitions(resources=build_resources(), executor=default_executor()),
)

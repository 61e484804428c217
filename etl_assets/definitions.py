"""The etl_assets code location: every domain's definitions plus shared resources."""

import dagster as dg

from etl_assets import salesforce
from etl_assets.resources import build_resources

defs = dg.Definitions.merge(
    salesforce.defs,
    dg.Definitions(resources=build_resources()),
)

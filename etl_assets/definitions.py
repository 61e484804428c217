"""The etl_assets code location: every domain's Definitions plus the deployment.

The deployment (warehouse, landing zone, totesys source, executor, schedule) is read from the
environment once, here at load, by etl_assets/settings.py: `deployment_definitions()`.
"""

import dagster as dg

from etl_assets import dbt_project, files, salesforce, totesys
from etl_assets.settings import deployment_definitions

defs = dg.Definitions.merge(
    salesforce.defs,
    files.defs,
    totesys.defs,
    dbt_project.defs,
    deployment_definitions(),
)

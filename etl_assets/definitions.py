"""The etl_assets code location: every domain's Definitions on the deployment.

The deployment (warehouse, landing zone, totesys source, executor, schedule) is read from the
environment once, here at load, by etl_assets/settings.py: `deploy(...)`, which also makes every
asset's step check a run's environment against it when the run starts.
"""

from etl_assets import dbt_project, files, salesforce, totesys
from etl_assets.settings import deploy

defs = deploy(salesforce.defs, files.defs, totesys.defs, dbt_project.defs)

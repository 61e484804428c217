"""Salesforce differential backups -> one merged warehouse table per object."""

import dagster as dg

from etl_assets.salesforce.assets import salesforce_object_assets, salesforce_objects
from etl_assets.salesforce.catalog import load_catalog
from etl_assets.salesforce.personal_data import hash_key_resource
from etl_assets.salesforce.sensors import salesforce_backup_sensor

salesforce_backup_job = dg.define_asset_job(
    "salesforce_backup_job",
    selection=salesforce_objects,
    description="Materialize Salesforce objects for one differential folder (partition).",
)

defs = dg.Definitions(
    assets=salesforce_object_assets,
    sensors=[salesforce_backup_sensor],
    jobs=[salesforce_backup_job],
    resources={"column_policy_key": hash_key_resource(load_catalog().values())},
)

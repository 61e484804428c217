"""The dbt project (totesys star schema, Salesforce marts) as Dagster assets."""

from etl_assets.accepted_warnings import accepting

# sqlglotrs warns on import that it is deprecated (etl_assets/accepted_warnings.py): import it once,
# with that one warning silenced, so the code location loads cleanly under `-W error`.
with accepting("sqlglotrs"):
    try:
        import sqlglotrs  # noqa: F401
    except ImportError:
        pass

import dagster as dg  # noqa: E402

from etl_assets.dbt_project.assets import dbt_models  # noqa: E402
from etl_assets.dbt_project.freshness import build_freshness_notification_sensor  # noqa: E402

automation_sensor = dg.AutomationConditionSensorDefinition(
    "dbt_automation_sensor",
    target=dg.AssetSelection.assets(dbt_models),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Runs dbt models whose upstream assets were materialized (declarative automation).",
)

freshness_sensor = build_freshness_notification_sensor(
    [spec.key for spec in dbt_models.specs if spec.freshness_policy is not None])

defs = dg.Definitions(
    assets=[dbt_models],
    sensors=[automation_sensor, freshness_sensor],
)  # the `dbt` resource is the deployment's (etl_assets/settings.py): its target is the chosen warehouse

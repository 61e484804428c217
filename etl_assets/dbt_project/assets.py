"""Every dbt model, seed and test as Dagster assets and asset checks.

Sources map to the assets that load them (raw_totesys/<table>, salesforce/<object>), models
to [schema, model] like every warehouse table here, so the graph runs from the OLTP tables
through the raw tables and staging views to the marts. Models follow their upstream assets
by declarative automation (eager), so an extraction that lands rows triggers the models
downstream of it, and one that lands nothing triggers nothing.

The totesys facts carry the specification's visibility as a freshness policy: built within the
last 30 minutes (warn after 20). Besides following their inputs they rebuild on a 15-minute
cron tick, so a quiet source (no rows changed) is not reported as a missed deadline: such a
build adds nothing but confirms the fact holds every extracted version at that time.
"""

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from etl_assets.dbt_project.project import dbt_project

GROUPS = {"totesys": "totesys_star", "salesforce": "salesforce_marts"}
FACT_VISIBILITY = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(minutes=30),
                                                 warn_window=dt.timedelta(minutes=20))
FACT_HEARTBEAT_CRON = "*/15 * * * *"


def follow_upstream() -> dg.AutomationCondition:
    """Eager, but not held back by a missing upstream partition: a Salesforce object with no
    backup in some folder must not stop its marts from refreshing."""
    return dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


def follow_upstream_or_heartbeat() -> dg.AutomationCondition:
    """Follow upstream, and also build on every heartbeat tick (a no-op incremental run when
    nothing is new), so freshness measures "holds what was extracted", not "the source changed"."""
    heartbeat = dg.AutomationCondition.cron_tick_passed(FACT_HEARTBEAT_CRON) & ~dg.AutomationCondition.in_progress()
    return (follow_upstream() | heartbeat).with_label("follow upstream, or every 15 minutes")


def is_totesys_fact(props: Mapping[str, Any]) -> bool:
    return "totesys" in props["fqn"] and props["name"].startswith("fact_")


class EtlDbtTranslator(DagsterDbtTranslator):
    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec
        domain = next((d for d in GROUPS if d in props["fqn"]), "reference")
        fact = is_totesys_fact(props)
        return spec.replace_attributes(
            key=dg.AssetKey([props["config"]["schema"], props["name"]]),
            group_name=GROUPS.get(domain, "totesys_star"),
            automation_condition=follow_upstream_or_heartbeat() if fact else follow_upstream(),
            freshness_policy=FACT_VISIBILITY if fact else None,
            owners=["team:data-engineering"],
        ).merge_attributes(tags={"domain": domain})

    def get_asset_check_spec(self, asset_spec: dg.AssetSpec, manifest: Mapping[str, Any], unique_id: str,
                             project: DbtProject | None) -> dg.AssetCheckSpec | None:
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None or spec.description:
            return spec
        return spec._replace(description=describe_dbt_test(manifest["nodes"].get(unique_id, {})))


def describe_dbt_test(node: Mapping[str, Any]) -> str:
    """A dbt test in words, for the asset check's description (dbt's generic tests have none)."""
    if node.get("description"):
        return node["description"]
    test = node.get("test_metadata") or {}
    kwargs = test.get("kwargs") or {}
    column = kwargs.get("column_name") or node.get("column_name")
    if test.get("name") == "not_null":
        return f"dbt test: `{column}` is never null."
    if test.get("name") == "unique":
        return f"dbt test: `{column}` is unique."
    if test.get("name") == "accepted_values":
        return f"dbt test: `{column}` is one of {', '.join(str(v) for v in kwargs.get('values', []))}."
    if test.get("name") == "relationships":
        target = re.search(r"ref\(['\"]([^'\"]+)['\"]\)", kwargs.get("to", ""))
        return (f"dbt test: every `{column}` exists in "
                f"`{target.group(1) if target else kwargs.get('to')}.{kwargs.get('field')}`.")
    return f"dbt test `{test.get('name') or node.get('name')}`" + (f" on `{column}`." if column else ".")


class DbtBuildConfig(dg.Config):
    full_refresh: bool = False
    """`dbt build --full-refresh`: rebuild the incremental facts from the raw history (same rows)."""


# Duplicate source keys: a Salesforce object's table (source salesforce) and its versions table (source
# salesforce_history) are both written by the one asset salesforce/<object>, so both map to its key.
translator = EtlDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_code_references=False,
                                                                    enable_duplicate_source_asset_keys=True))


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=translator,
    pool="warehouse",
    name="dbt_models",
)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, config: DbtBuildConfig):
    """`dbt build` of the selected models: each model is followed by its tests (asset checks)."""
    yield from dbt.cli(["build", *(["--full-refresh"] if config.full_refresh else [])], context=context).stream()

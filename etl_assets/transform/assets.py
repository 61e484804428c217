"""Every dbt model, seed and test as Dagster assets and asset checks.

Sources map to the assets that load them (raw_totesys/<table>, salesforce/<object>), models
to [schema, model] like every warehouse table here, so the graph runs from the OLTP tables
through the raw tables and staging views to the marts. Models follow their upstream assets
by declarative automation (eager), so an extraction that lands rows triggers the models
downstream of it, and one that lands nothing triggers nothing.
"""

import re
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets

from etl_assets.transform.project import dbt_project

GROUPS = {"totesys": "totesys_star", "salesforce": "salesforce_marts"}


def follow_upstream() -> dg.AutomationCondition:
    """Eager, but not held back by a missing upstream partition: a Salesforce object with no
    backup in some folder must not stop its marts from refreshing."""
    return dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


class EtlDbtTranslator(DagsterDbtTranslator):
    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec
        domain = next((d for d in GROUPS if d in props["fqn"]), "reference")
        return spec.replace_attributes(
            key=dg.AssetKey([props["config"]["schema"], props["name"]]),
            group_name=GROUPS.get(domain, "totesys_star"),
            automation_condition=follow_upstream(),
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


translator = EtlDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_code_references=False))


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=translator,
    pool="warehouse",
    name="dbt_models",
)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """`dbt build` of the selected models: each model is followed by its tests (asset checks)."""
    yield from dbt.cli(["build"], context=context).stream()

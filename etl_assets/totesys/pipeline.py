"""What `etl-assets seed-totesys` and `etl-assets totesys` do: the operator's view of the domain.

`totesys` is the whole flow in one process, as `make run` needs it: seed the embedded
source if it is empty, run the extraction job, then `dbt build` through the dbt assets if any
model is older than one of its inputs (or was never built), and summarize both. "Older" is
Dagster's own record, compared by event order rather than clocks, so raw tables extracted from
the UI or the schedule since the last build count as well as this run's.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from etl_assets.totesys.source import TotesysSource
from etl_assets.warehouse.base import Warehouse

if TYPE_CHECKING:
    from etl_assets.execution import SupervisedRuns

SALESFORCE_SOURCES = ("user", "task", "litify_pm__matter__c")


def _resolved(defs: dg.Definitions, key: str):
    """The code location's resource `key`, its environment variables resolved (the deployment chose it)."""
    with dg.build_resources({key: defs.resources[key]}) as resources:
        return getattr(resources, key)


def resolved_source(defs: dg.Definitions) -> TotesysSource:
    return _resolved(defs, "totesys_source")


def resolved_warehouse(defs: dg.Definitions) -> Warehouse:
    return _resolved(defs, "warehouse")


@dataclass
class PipelineSummary:
    seeded: dict[str, dict] | None = None
    extracted: dict[str, dict] = field(default_factory=dict)
    dbt_ran: bool = False
    stale_models: list[str] = field(default_factory=list)  # why dbt ran: models older than an input
    dbt_skipped_groups: list[str] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    checks_warned: list[str] = field(default_factory=list)
    mart_rows: dict[str, int] = field(default_factory=dict)
    dbt_log_tail: list[str] = field(default_factory=list)
    success: bool = True


def stale_models(instance: dg.DagsterInstance, graph, keys: list[dg.AssetKey]) -> list[dg.AssetKey]:
    """The models never built, or built before the latest materialization of one of their parents."""
    parents = {p for k in keys for p in graph.get(k).parent_keys}
    latest = {}
    for record in instance.get_asset_records(list(set(keys) | parents)):
        materialization = record.asset_entry.last_materialization_record
        if materialization is not None:
            latest[record.asset_entry.asset_key] = materialization.storage_id
    return [k for k in keys if k not in latest
            or any(latest.get(p, -1) > latest[k] for p in graph.get(k).parent_keys)]


def job_run(job: dg.JobDefinition, run_config: dict, asset_selection: list[dg.AssetKey] | None = None,
            stdout_to: Path | None = None):
    """One run of `job`, as SupervisedRuns executes it (in process, with the run id and tags it is given);
    with `stdout_to`, what the run prints (dbt's own log lines) goes to that file instead."""

    def execute(instance: dg.DagsterInstance, run_id: str, tags: dict) -> None:
        with contextlib.ExitStack() as stack:
            if stdout_to:
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(stdout_to, "w"))))
            job.execute_in_process(
                instance=instance, run_id=run_id, run_config=run_config, asset_selection=asset_selection,
                raise_on_error=False, tags={**tags, "etl_assets/launched_by": "etl-assets totesys"},
            )

    return execute


def run_totesys_pipeline(defs: dg.Definitions, runs: SupervisedRuns, run_config: dict) -> PipelineSummary:
    """The extraction run, then the dbt build if a model is stale, each executed by `runs` (so SIGTERM
    or Ctrl-C cancel the run in progress and free its slots, and `StopRequested` follows)."""
    summary = PipelineSummary()

    extraction = runs.execute("totesys extract", job_run(defs.resolve_job_def("totesys_extract_job"), run_config))
    runs.check_stop()  # a stop during the extraction: StopRequested, no dbt build
    summary.success = extraction.success
    for event in extraction.get_asset_materialization_events():
        metadata = event.step_materialization_data.materialization.metadata
        summary.extracted[metadata["dagster/table_name"].value] = {
            name: metadata[name].value for name in ("rows_read", "inserted", "updated", "dagster/row_count")
        }
    if not extraction.success:
        summary.dbt_log_tail = extraction.problems
        return summary

    graph = defs.resolve_asset_graph()
    dbt_keys = [k for k in graph.get_all_asset_keys() if k.path[0] in ("staging", "marts")]
    warehouse = resolved_warehouse(defs)
    if not all(warehouse.has_table("salesforce", table) for table in SALESFORCE_SOURCES):
        summary.dbt_skipped_groups.append("salesforce_marts")
        dbt_keys = [k for k in dbt_keys if graph.get(k).group_name != "salesforce_marts"]
    stale = stale_models(runs.instance, graph, dbt_keys)
    summary.stale_models = [k.to_user_string() for k in stale]
    if not stale:
        return summary
    with tempfile.TemporaryDirectory(prefix="etl_assets_dbt_") as scratch:
        dbt_output = Path(scratch) / "dbt.log"  # dbt's own log lines; the summary says what matters
        result = runs.execute("dbt build", job_run(defs.resolve_implicit_global_asset_job_def(), run_config,
                                                   asset_selection=dbt_keys, stdout_to=dbt_output))
        runs.check_stop()
        summary.dbt_ran = True
        summary.success = result.success
        if not result.success:
            logged = dbt_output.read_text(errors="replace").splitlines() if dbt_output.exists() else []
            summary.dbt_log_tail = logged[-40:] + result.problems
    for evaluation in result.get_asset_check_evaluations():
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        if evaluation.passed:
            summary.checks_passed += 1
        elif evaluation.severity == dg.AssetCheckSeverity.WARN:
            summary.checks_warned.append(name)
        else:
            summary.checks_failed.append(name)
    for key in sorted(dbt_keys, key=lambda k: k.path):
        if key.path[0] == "marts":
            summary.mart_rows[f"marts.{key.path[1]}"] = warehouse.count_rows("marts", key.path[1])
    return summary

"""Module-level entry points a multiprocess Dagster run can re-import (reconstructable job, pool worker)."""

from __future__ import annotations

import dagster as dg

MULTIPROCESS = {"execution": {"config": {"multiprocess": {
    "max_concurrent": 2,
    # Step processes fork from a server that imported the code location once, instead of importing it each.
    "start_method": {"forkserver": {"preload_modules": ["etl_assets.definitions"]}},
}}}}


def salesforce_backup_job() -> dg.JobDefinition:
    from etl_assets.definitions import defs

    return defs.resolve_job_def("salesforce_backup_job")


def run_folders(folders: list[str], objects: list[str], run_config: dict | None = MULTIPROCESS
                ) -> list[tuple[str, bool]]:
    """Execute one run per folder on the instance in DAGSTER_HOME (called in a worker process): with
    the multiprocess executor by default, with the code location's own executor if `run_config` is None."""
    selection = [dg.AssetKey(["salesforce", o.lower()]) for o in objects]
    outcomes = []
    with dg.DagsterInstance.get() as instance:
        for folder in folders:
            with dg.execute_job(dg.reconstructable(salesforce_backup_job), instance=instance, run_config=MULTIPROCESS,
                                tags={"dagster/partition": folder}, asset_selection=selection) as result:
                outcomes.append((folder, result.success))
    return outcomes

"""Where steps run: in this machine's processes (Dagster's default) or on Celery workers.

`ETL_ASSETS_EXECUTOR=celery` makes dagster-celery's `celery_executor` the default executor of
every job in the code location: the run process only orchestrates, and each step is a Celery task
that a worker (`dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml`), on this
host or another, picks up from the broker. The broker and result backend are URLs read from the
environment when a run starts (`ETL_ASSETS_CELERY_BROKER`, `ETL_ASSETS_CELERY_BACKEND`), so a
password in them never enters code or run config; the workers read the same variables through
deploy/celery.yaml. `ETL_ASSETS_CELERY_QUEUE` (default `dagster`) names the queue steps are sent
to; workers listen on it with `-q`. Unset, or `multiprocess`, keeps Dagster's default executor
(a process per step on the run's machine). `in_process` runs every step of a run in the run's own
process, one after another: no step pays for loading the code location again (~4 s of CPU each),
which is what a folder of many small objects needs; a failed step still leaves the others to run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

EXECUTORS = ("multiprocess", "in_process", "celery")
BROKER = "ETL_ASSETS_CELERY_BROKER"
BACKEND = "ETL_ASSETS_CELERY_BACKEND"
QUEUE = "ETL_ASSETS_CELERY_QUEUE"
DEFAULT_QUEUE = "dagster"


def build_executor(env: Mapping[str, str] = os.environ) -> dg.ExecutorDefinition | None:
    """The executor the environment asks for; None means Dagster's default (multiprocess)."""
    choice = env.get("ETL_ASSETS_EXECUTOR", "multiprocess").lower() or "multiprocess"
    if choice not in EXECUTORS:
        raise ValueError(f"ETL_ASSETS_EXECUTOR={choice!r}: expected one of {', '.join(EXECUTORS)}")
    if choice == "multiprocess":
        return None
    if choice == "in_process":
        return dg.in_process_executor
    missing = [name for name in (BROKER, BACKEND) if not env.get(name)]
    if missing:
        raise ValueError(f"ETL_ASSETS_EXECUTOR=celery needs {' and '.join(missing)} "
                         "(e.g. redis://broker.internal:6379/0 for both)")
    from dagster_celery import celery_executor  # only imported when Celery is chosen

    return celery_executor.configured(
        {
            # Resolved by Dagster when a run starts, in the run process and in each worker.
            "broker": {"env": BROKER},
            "backend": {"env": BACKEND},
            # The queue steps are sent to; workers must listen on it (`-q`).
            "config_source": {"task_default_queue": env.get(QUEUE) or DEFAULT_QUEUE},
        },
        name="celery",
    )

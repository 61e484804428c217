"""The dbt marts on Redshift without a cluster: the project compiles for the `redshift` target with
dbt-redshift, and the compiled SQL of every model (and every data test) parses as Redshift SQL.

How it compiles offline: `dbt compile --no-populate-cache` renders models without asking the
warehouse anything, except `is_incremental()`, which looks the model's table up. The profile points
at a loopback port that refuses connections, so any query would fail the compile. The project is
compiled twice, from a scratch copy whose `is_incremental()` answers from a variable instead of
looking the table up: once as a first build, once as an incremental run, so both branches of each
incremental fact are checked.

What this proves: every model renders for the redshift adapter (its dispatched macros:
`dbt.dateadd`, `dbt.datediff`), and sqlglot reads the result as Redshift SQL. Each function must be
one sqlglot's Redshift dialect knows, and nothing Redshift lacks may appear (DISTINCT ON,
generate_series, which runs on the leader node only). What it cannot prove: that a cluster plans
and runs it (types, correlated-subquery limits); dbt/README.md says how to build the marts on a
real cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from etl_assets.dbt_project.project import DBT_PROJECT_DIR, dbt_executable

MODELS = sorted(p.stem for p in (DBT_PROJECT_DIR / "models").rglob("*.sql"))
INCREMENTAL = ["fact_payment", "fact_purchase_order", "fact_sales_order"]

# Answers is_incremental() from a variable: the one question dbt compile would otherwise ask the
# cluster (does the model's table exist yet?). Only the scratch copy of the project has it.
IS_INCREMENTAL_FROM_VAR = """
{% macro is_incremental() %}
    {{ return(execute and var('compile_incremental', false) and model.config.materialized == 'incremental') }}
{% endmacro %}
"""


@pytest.fixture(scope="module")
def refused_port():
    """A loopback port nothing listens on: bound (so no one else takes it), never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("dbt") / "project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    (copy / "macros" / "is_incremental_from_var.sql").write_text(IS_INCREMENTAL_FROM_VAR)
    return copy


def compile_for_redshift(project: Path, port: int, target_path: Path, incremental: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_ASSETS_", "DBT_"))}
    env.update(ETL_ASSETS_WAREHOUSE="redshift", ETL_ASSETS_REDSHIFT_HOST="127.0.0.1",
               ETL_ASSETS_REDSHIFT_PORT=str(port), ETL_ASSETS_REDSHIFT_DATABASE="dev")
    result = subprocess.run(
        [dbt_executable(), "compile", "--no-populate-cache", "--no-version-check", "--no-partial-parse",
         "--project-dir", str(project), "--profiles-dir", str(project), "--target", "redshift",
         "--target-path", str(target_path), "--log-path", str(target_path / "logs"),
         "--vars", json.dumps({"compile_incremental": incremental})],
        cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"dbt compile for redshift failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    return json.loads((target_path / "manifest.json").read_text())


@pytest.fixture(scope="module", params=[False, True], ids=["first_build", "incremental_run"])
def compiled(request, project_copy, refused_port, tmp_path_factory):
    """(incremental?, the manifest of `dbt compile` for the redshift target)."""
    target = tmp_path_factory.mktemp("target")
    return request.param, compile_for_redshift(project_copy, refused_port, target, incremental=request.param)


def nodes(manifest: dict, resource_type: str) -> dict[str, dict]:
    return {node["name"]: node for node in manifest["nodes"].values() if node["resource_type"] == resource_type}


def parse_as_redshift(name: str, sql: str) -> list[exp.Expression]:
    statements = [s for s in sqlglot.parse(sql, read="redshift", error_level=ErrorLevel.RAISE) if s is not None]
    assert statements, f"{name}: compiled to no SQL"
    for statement in statements:
        assert not isinstance(statement, exp.Command), f"{name}: not understood as Redshift SQL: {sql[:200]}"
        unknown = sorted({f.name for f in statement.find_all(exp.Anonymous)})
        assert not unknown, f"{name}: functions sqlglot's Redshift dialect does not know: {unknown}"
        distinct_on = [d for d in statement.find_all(exp.Distinct) if d.args.get("on")]
        assert not distinct_on, f"{name}: DISTINCT ON, which Redshift lacks"
        series = list(statement.find_all(exp.GenerateSeries, exp.ExplodingGenerateSeries))
        assert not series, f"{name}: generate_series runs on Redshift's leader node only"
    return statements


def test_every_model_compiles_for_redshift_and_parses_as_redshift(compiled):
    incremental, manifest = compiled
    assert manifest["metadata"]["adapter_type"] == "redshift"
    models = nodes(manifest, "model")
    assert sorted(models) == MODELS
    for name, node in models.items():
        assert node["compiled_code"].strip(), f"{name}: compiled to nothing"
        parse_as_redshift(name, node["compiled_code"])
    for name in INCREMENTAL:
        # The incremental branch reads the fact itself (new versions only, keys counting on).
        reads_itself = f'"marts"."{name}"' in models[name]["compiled_code"]
        assert reads_itself is incremental, f"{name}: the {'incremental' if incremental else 'first-build'} branch"


def test_every_data_test_parses_as_redshift(compiled):
    _, manifest = compiled
    tests = nodes(manifest, "test")
    assert len(tests) > 100
    for name, node in tests.items():
        parse_as_redshift(name, node["compiled_code"])


def test_cross_database_macros_render_in_redshifts_spelling(compiled):
    _, manifest = compiled
    (dim_date,) = parse_as_redshift("dim_date", nodes(manifest, "model")["dim_date"]["compiled_code"])
    assert list(dim_date.find_all(exp.TsOrDsAdd)) and list(dim_date.find_all(exp.TsOrDsDiff))  # dateadd, datediff
    sql = nodes(manifest, "model")["dim_date"]["compiled_code"].lower()
    # redshift__dateadd and redshift__datediff, not the default's `+ interval` or DuckDB's date_diff('day', ...)
    assert re.search(r"\bdateadd\(\s*day\s*,", sql) and re.search(r"\bdatediff\(\s*day\s*,", sql), sql
    assert "interval" not in sql

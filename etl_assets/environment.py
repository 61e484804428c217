"""Every `ETL_ASSETS_*` variable the code reads, in one list, and the checks `etl-assets` makes of an
environment before it does anything: a name the code does not read (with the closest one it does),
a value of the wrong kind, a variable the chosen deployment needs but that is unset.

The list is what the code reads (etl_assets_tests/test_cli_errors.py fails when a module reads a
name that is not here, or a name here is read nowhere); docs/configuration.md says what each one
means. It imports nothing heavy, so a command can check its environment before loading Dagster.
`etl_assets/settings.py` reads the deployment's choices from the tuples defined here.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "ETL_ASSETS_"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "data"  # the default place of the landing zone, the DuckDB files (docs/configuration.md)

WAREHOUSES = ("duckdb", "postgres", "redshift")
LANDING_ZONES = ("local", "s3")
TOTESYS_SOURCES = ("duckdb", "postgres")
EXECUTORS = ("multiprocess", "in_process", "celery", "forkserver", "auto")
SCHEDULE_STATUSES = ("running", "stopped")
REDSHIFT_CONNECTIONS = ("psycopg2", "data_api")
LOCAL_STORAGES = ("etl_assets", "dagster")


class ConfigurationError(ValueError):
    """The environment (or a command's arguments) cannot work: the message is one line that names the
    variable or value and what it accepts; `etl-assets` prints it and exits 2."""


@dataclass(frozen=True)
class Variable:
    """One variable: what kind of value it holds and when the deployment cannot do without it."""

    name: str
    kind: str  # choice, port, text, path, file, url, secret, cron, encoding, encodings, suffix, days
    choices: tuple[str, ...] = ()
    # Required when every one of these variables has this value (defaults applied): {variable: value}
    required_when: Mapping[str, str] = field(default_factory=dict)
    default: str = ""
    secret: bool = False  # never shown in a message
    tests_only: bool = False  # read by etl_assets_tests/, not by the package


def _variables(*items: Variable) -> dict[str, Variable]:
    return {item.name: item for item in items}


def _server(prefix: str, database: str) -> list[Variable]:
    """A PostgreSQL server's five variables (settings._postgres_server reads them from the prefix)."""
    return [Variable(f"{prefix}HOST", "text", default="127.0.0.1"), Variable(f"{prefix}PORT", "port", default="5432"),
            Variable(f"{prefix}DATABASE", "text", default=database), Variable(f"{prefix}USER", "text", default="postgres"),
            Variable(f"{prefix}PASSWORD", "secret", secret=True)]


_REDSHIFT = {"ETL_ASSETS_WAREHOUSE": "redshift"}
_S3 = {"ETL_ASSETS_LANDING_ZONE": "s3"}
_CELERY = {"ETL_ASSETS_EXECUTOR": "celery"}

VARIABLES: dict[str, Variable] = _variables(
    # The deployment's choices (etl_assets/settings.py reads them when the code location loads).
    Variable("ETL_ASSETS_WAREHOUSE", "choice", WAREHOUSES, default="duckdb"),
    Variable("ETL_ASSETS_LANDING_ZONE", "choice", LANDING_ZONES, default="local"),
    Variable("ETL_ASSETS_TOTESYS_SOURCE", "choice", TOTESYS_SOURCES, default="duckdb"),
    Variable("ETL_ASSETS_EXECUTOR", "choice", EXECUTORS, default="auto"),
    Variable("ETL_ASSETS_CELERY_QUEUE", "text", default="dagster"),
    Variable("ETL_ASSETS_TOTESYS_CRON", "cron", default="*/5 * * * *"),
    Variable("ETL_ASSETS_TOTESYS_SCHEDULE", "choice", SCHEDULE_STATUSES, default="running"),
    # The local Dagster instance's storage (etl_assets/dagster_internals.py, read when the instance opens).
    Variable("ETL_ASSETS_LOCAL_STORAGE", "choice", LOCAL_STORAGES, default="etl_assets"),
    # Landing zone.
    Variable("ETL_ASSETS_LANDING_ROOT", "path"),
    Variable("ETL_ASSETS_LANDING_BUCKET", "text", required_when=_S3),
    Variable("ETL_ASSETS_LANDING_PREFIX", "text"),
    Variable("ETL_ASSETS_S3_ENDPOINT_URL", "url"),
    # Warehouses.
    Variable("ETL_ASSETS_DUCKDB_PATH", "path"),
    *_server("ETL_ASSETS_PG_", "postgres"),
    Variable("ETL_ASSETS_REDSHIFT_CONNECTION", "choice", REDSHIFT_CONNECTIONS, default="psycopg2"),
    Variable("ETL_ASSETS_REDSHIFT_HOST", "text",
             required_when={**_REDSHIFT, "ETL_ASSETS_REDSHIFT_CONNECTION": "psycopg2"}),
    Variable("ETL_ASSETS_REDSHIFT_PORT", "port", default="5439"),
    Variable("ETL_ASSETS_REDSHIFT_DATABASE", "text", default="dev"),
    Variable("ETL_ASSETS_REDSHIFT_USER", "text"),
    Variable("ETL_ASSETS_REDSHIFT_PASSWORD", "secret", secret=True),
    Variable("ETL_ASSETS_REDSHIFT_CLUSTER_IDENTIFIER", "text"),
    Variable("ETL_ASSETS_REDSHIFT_WORKGROUP", "text"),
    Variable("ETL_ASSETS_REDSHIFT_SECRET_ARN", "text"),
    Variable("ETL_ASSETS_REDSHIFT_DB_USER", "text"),
    Variable("ETL_ASSETS_REDSHIFT_DATA_API_ENDPOINT_URL", "url"),
    Variable("ETL_ASSETS_REDSHIFT_STAGING_BUCKET", "text", required_when=_REDSHIFT),
    Variable("ETL_ASSETS_REDSHIFT_STAGING_PREFIX", "text", default="etl_assets/staging"),
    Variable("ETL_ASSETS_REDSHIFT_IAM_ROLE_ARN", "text", required_when=_REDSHIFT),
    # Notifications, the audit endpoint.
    Variable("ETL_ASSETS_SNS_TOPIC_ARN", "text"),
    Variable("ETL_ASSETS_SNS_ENDPOINT_URL", "url"),
    Variable("ETL_ASSETS_AUDIT_TOKEN", "secret", secret=True),
    # Salesforce backups and file feeds (read when asked, by their modules).
    Variable("ETL_ASSETS_FEEDS", "file"),
    Variable("ETL_ASSETS_FILE_PARTITION_RETENTION_DAYS", "days", default="7"),
    Variable("ETL_ASSETS_FULL_BACKUP_SUFFIX", "suffix", default="_Full"),
    Variable("ETL_ASSETS_SALESFORCE_ENCODING", "encoding", default="utf-8"),
    # The key of `hash` column policies (docs/personal-data.md); read by Dagster as an EnvVar.
    Variable("ETL_ASSETS_HASH_KEY", "secret", secret=True),
    Variable("ETL_ASSETS_SALESFORCE_FOLDER_ENCODINGS", "encodings"),
    Variable("ETL_ASSETS_SALESFORCE_FALLBACK_ENCODING", "encoding", default="windows-1252"),
    Variable("ETL_ASSETS_SALESFORCE_DISCOVERED", "path"),
    Variable("ETL_ASSETS_SALESFORCE_HISTORY", "choice", ("on", "off"), default="on"),
    # totesys.
    Variable("ETL_ASSETS_TOTESYS_DUCKDB_PATH", "path"),
    *_server("ETL_ASSETS_TOTESYS_PG_", "totesys"),
    # Celery (URLs may hold a password: never shown).
    Variable("ETL_ASSETS_CELERY_BROKER", "url", required_when=_CELERY, secret=True),
    Variable("ETL_ASSETS_CELERY_BACKEND", "url", required_when=_CELERY, secret=True),
    # Read by the test suite only (docs/configuration.md lists them too): known, so never refused.
    Variable("ETL_ASSETS_TEST_PG_HOST", "text", tests_only=True),
    Variable("ETL_ASSETS_TEST_PG_PORT", "port", tests_only=True),
    Variable("ETL_ASSETS_TEST_PG_USER", "text", tests_only=True),
    Variable("ETL_ASSETS_TEST_REDIS_URL", "url", tests_only=True, secret=True),
    Variable("ETL_ASSETS_UI_SCREENSHOTS", "path", tests_only=True),
    Variable("ETL_ASSETS_UPDATE_SCREENSHOTS", "text", tests_only=True),
    Variable("ETL_ASSETS_UPDATE_SNAPSHOT", "text", tests_only=True),
)


def closest(name: str, known, cutoff: float = 0.6) -> str | None:
    """The known name closest to `name` (difflib, case-insensitive), or None when none is close."""
    by_lower = {k.lower(): k for k in known}
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[match[0]] if match else None


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """One message per `ETL_ASSETS_*` variable set in `env` that no code reads, with the closest one that is."""
    env = os.environ if env is None else env
    problems = []
    for name in sorted(n for n in env if n.startswith(PREFIX) and n not in VARIABLES):
        suggestion = closest(name.removeprefix(PREFIX), [v.removeprefix(PREFIX) for v in VARIABLES])  # the part
        suggestion = suggestion and PREFIX + suggestion  # that differs: every name shares the prefix
        hint = f"did you mean {suggestion}?" if suggestion else "docs/configuration.md lists the variables"
        problems.append(f"{name} is set but etl_assets reads no such variable ({hint})")
    return problems


def _choice(variable: Variable, value: str) -> str | None:
    if value.lower() not in variable.choices:
        return f"{variable.name}={value.lower()!r}: expected one of {', '.join(variable.choices)}"
    return None


def _port(variable: Variable, value: str) -> str | None:
    if not re.fullmatch(r"\d+", value.strip()) or not 0 < int(value) < 65536:
        return f"{variable.name}={value!r}: expected a port number (1-65535)"
    return None


def _url(variable: Variable, value: str) -> str | None:
    if not re.match(r"^[a-z][a-z0-9+.-]*://\S+$", value.strip(), re.IGNORECASE):
        shown = "" if variable.secret else f"={value!r}"
        return f"{variable.name}{shown}: expected a URL such as http://127.0.0.1:9000"
    return None


def _encodings(variable: Variable, value: str) -> str | None:
    from etl_assets.salesforce.encodings import EncodingSettingError, folder_encoding, folder_encodings

    try:  # the module that reads them says what is wrong (the variable, the value, what it accepts)
        if variable.kind == "encodings":
            folder_encodings({variable.name: value})
        else:
            folder_encoding("", {variable.name: value})
    except EncodingSettingError as error:
        return str(error)
    return None


def _suffix(variable: Variable, value: str) -> str | None:
    # The rule of etl_assets.salesforce.partitions.full_backup_suffix (which reads only os.environ).
    if not re.fullmatch(r"_[A-Za-z0-9]+", value) or value == "_Differential":
        return f"{variable.name}={value!r}: expected '_' then letters or digits, other than _Differential"
    return None


def _days(variable: Variable, value: str) -> str | None:
    # A number of days, 0 or more, fractions allowed (etl_assets.files.sensors.retention_seconds applies it).
    try:
        days = float(value)
    except ValueError:
        days = -1.0
    if not math.isfinite(days) or days < 0:
        return f"{variable.name}={value.strip()!r}: expected a number of days, 0 or more (e.g. 7, or 0.5 for 12 hours)"
    return None


def _file(variable: Variable, value: str) -> str | None:
    if not os.path.isfile(os.path.expanduser(value)):
        return f"{variable.name}={value!r}: no such file"
    return None


CHECKS: dict[str, Callable[[Variable, str], str | None]] = {
    "choice": _choice, "port": _port, "url": _url, "encoding": _encodings, "encodings": _encodings,
    "suffix": _suffix, "file": _file, "days": _days,
}


def value_problems(env: Mapping[str, str] | None = None) -> list[str]:
    """One message per known variable set in `env` to a value of the wrong kind (empty counts as unset).
    The cron is checked with the other choices by `Settings.read`."""
    env = os.environ if env is None else env
    problems = []
    for name, variable in VARIABLES.items():
        value = env.get(name) or ""
        check = CHECKS.get(variable.kind)
        if value.strip() and check is not None:
            problem = check(variable, value)
            if problem:
                problems.append(problem)
    return problems


def chosen(name: str, env: Mapping[str, str] | None = None) -> str:
    """A variable's value as the code reads it: stripped, lower-case for a choice, the default when unset."""
    env = os.environ if env is None else env
    variable = VARIABLES[name]
    value = (env.get(name) or "").strip() or variable.default
    return value.lower() if variable.kind == "choice" else value


def missing_variables(uses: set[str], env: Mapping[str, str] | None = None) -> list[str]:
    """One message per variable that the choices in `uses` (choice variables) make required but is unset."""
    env = os.environ if env is None else env
    problems = []
    for name, variable in VARIABLES.items():
        when = variable.required_when
        if not when or not set(when) & uses or (env.get(name) or "").strip():
            continue
        if all(chosen(choice, env) == value for choice, value in when.items()):
            because = " and ".join(f"{choice}={value}" for choice, value in when.items())
            problems.append(f"{name} is not set (needed with {because})")
    return problems


def problems(env: Mapping[str, str] | None = None, uses: set[str] = frozenset()) -> list[str]:
    """Everything wrong with `env` for a command that uses the deployment choices in `uses`."""
    return unknown_variables(env) + value_problems(env) + missing_variables(set(uses), env)


def check(env: Mapping[str, str] | None = None, uses: set[str] = frozenset()) -> None:
    """Raise ConfigurationError with every problem of `env`, on one line."""
    found = problems(env, uses)
    if found:
        raise ConfigurationError("; ".join(found))

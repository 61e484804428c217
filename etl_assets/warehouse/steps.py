"""What a load plan is made of: statements, statements that read a batch's rows, and choices made as
the transaction runs; and what a load reports.

Because a load is a plan of these, `etl-assets sql` can print exactly what would run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from etl_assets.warehouse.rows import RowStream


@dataclass(frozen=True)
class Step:
    """One SQL statement of a load. `files` are staged Parquet files streamed into it (COPY FROM STDIN),
    as `columns`. `result` names the value to keep: the affected-row count, or with `fetch` the single
    value the statement returns (a tuple of names: the values of its one row). `label` is named in the
    error when the statement fails (a feed's post-load SQL)."""

    sql: str
    params: tuple = ()
    files: tuple[Path, ...] = ()
    columns: tuple[str, ...] = ()
    result: str | tuple[str, ...] | None = None
    fetch: bool = False
    label: str = ""


@dataclass(frozen=True)
class StreamStep(Step):
    """A statement that reads a batch's rows as it runs (PostgreSQL: COPY FROM STDIN; DuckDB: the
    statement reads the Arrow stream `etl_rows`), after which the results `keys_repeat` and `rejected`
    are known. With `distinct_keys` it writes straight into the table, so a repeated key makes the load
    read the rows again on the general path. `each_chunk` are statements run after each chunk of rows
    is written (the chunk merged from a staging table, then emptied), their results summed;
    `each_quiet_chunk`, where given, run instead after a chunk of which fewer than half the rows were
    `inserted` or `updated` (a re-run, a late folder): the same results, without touching the rest."""

    rows: RowStream | None = field(default=None, compare=False, repr=False)
    distinct_keys: bool = False
    each_chunk: tuple[Step, ...] = ()
    each_quiet_chunk: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Branch:
    """A choice the transaction makes as it runs: `then` if the earlier result `on` is true, else
    `otherwise`. A plan holds a shortcut and the general path it replaces, and the transaction takes
    one of them (only where sessions run steps one by one: `Capabilities.runs_steps_in_order`)."""

    on: str
    then: tuple[PlanStep, ...] = ()
    otherwise: tuple[PlanStep, ...] = ()


PlanStep = Union[Step, Branch]


def flatten(steps: Sequence[PlanStep]) -> list[Step]:
    """Every statement of `steps`, both ways of each Branch (to print or check them)."""
    statements = []
    for step in steps:
        if isinstance(step, Branch):
            statements += flatten(step.then) + flatten(step.otherwise)
        else:
            statements.append(step)
    return statements


@dataclass(frozen=True)
class Deferred:
    """A step parameter known only once the earlier steps of its transaction ran: `value(results)`
    gets the results kept so far (`Step.result`). The audit row a load writes in its own transaction
    counts the rows that load merged. Only sessions that run steps one by one resolve it
    (`Capabilities.runs_steps_in_order`); Redshift's Data API sends a whole batch at once."""

    value: Callable[[dict[str, int]], object]


def rows_merged(results: dict[str, int]) -> int:
    """The rows a load's transaction wrote (inserted or updated; DuckDB counts its replaced rows as inserted)."""
    return results.get("inserted", 0) + results.get("updated", 0)


@dataclass
class LoadPlan:
    """`prepare` is idempotent DDL, each statement committed on its own; `transaction` all of it or nothing."""

    prepare: list[Step] = field(default_factory=list)
    transaction: list[PlanStep] = field(default_factory=list)
    added_columns: tuple[str, ...] = ()

    def statements(self) -> list[Step]:
        return self.prepare + flatten(self.transaction)


@dataclass(frozen=True)
class LoadResult:
    keys_staged: int
    rows_rejected: int
    inserted: int
    updated: int
    added_columns: tuple[str, ...]
    deleted: int = 0  # rows an append of the same file, or a replace, removed first
    versions_added: int = 0  # versions the versions table did not hold (history mode)

    @property
    def unchanged(self) -> int:
        """Staged keys whose warehouse row was already as new or newer."""
        return max(self.keys_staged - self.inserted - self.updated, 0)

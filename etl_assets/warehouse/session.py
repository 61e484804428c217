"""A session: one open transaction, and how a plan's steps run in it.

Every engine's session (duckdb.py, postgres.py, redshift.py, redshift_data_api.py) says how a
statement, a COPY of staged files or a stream of rows reaches its database; `run` is the same for
all: steps one by one, each Branch taken as the results before it say, a Deferred parameter
resolved from them, a labelled statement's failure named.
"""

from __future__ import annotations

from collections.abc import Sequence

from etl_assets.warehouse.batch import ReadAgain
from etl_assets.warehouse.errors import StepFailed
from etl_assets.warehouse.spec import TableSpec
from etl_assets.warehouse.steps import Branch, Deferred, PlanStep, Step, StreamStep


class Session:
    """An open connection in a transaction (`Warehouse.session`)."""

    param = "%s"

    def execute(self, sql: str, params: Sequence = ()) -> int:
        """Run one statement; return the number of rows it affected."""
        raise NotImplementedError

    def fetchall(self, sql: str, params: Sequence = ()) -> list[tuple]:
        raise NotImplementedError

    def copy_files(self, step: Step) -> int | None:
        """Stream the step's Parquet files into its COPY statement; return the rows copied."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream local files")

    def copy_rows(self, step: StreamStep) -> int:
        """Read the step's rows into its statement; return the rows written."""
        raise NotImplementedError(f"{type(self).__name__} cannot load streamed rows")

    def copy_chunks(self, step: StreamStep, results: dict[str, int]) -> int:
        """Read the step's rows into its statement a chunk at a time, running `step.each_chunk` after each
        chunk and adding their results to `results`; return the rows written."""
        raise NotImplementedError(f"{type(self).__name__} cannot merge streamed rows by chunk")

    def lock_table(self, spec: TableSpec) -> None:
        """Serialize concurrent loads of one table, where the engine needs it."""

    def lock_catalog(self) -> None:
        """Serialize schema and table DDL across tables, where the engine needs it: on PostgreSQL
        `CREATE SCHEMA/TABLE IF NOT EXISTS` run by two transactions at once fails in the second."""

    def table_columns(self, schema: str, table: str) -> dict[str, int | None]:
        """Column name -> character width (None where unbounded) of an existing table; {} if there is none."""
        rows = self.fetchall(
            "SELECT column_name, character_maximum_length FROM information_schema.columns "
            f"WHERE table_schema = {self.param} AND table_name = {self.param} ORDER BY ordinal_position",
            [schema, table],
        )
        return {name: width for name, width in rows}

    def run_ddl(self, steps: Sequence[Step]) -> None:
        """Run a plan's `prepare` statements; Redshift commits each on its own (it cannot alter a
        column's type inside a transaction block)."""
        self.run(steps)

    def run(self, steps: Sequence[PlanStep], results: dict[str, int] | None = None) -> dict[str, int]:
        """Run `steps` in order; returns the results they kept (`Step.result`)."""
        results = {} if results is None else results
        for step in steps:
            if isinstance(step, Branch):
                self.run(step.then if results[step.on] else step.otherwise, results)
                continue
            if isinstance(step, StreamStep):
                value = self._stream(step, results)
            elif step.files:
                value = self.copy_files(step)
            else:
                value = self._statement(step, results)
            if isinstance(step.result, tuple):
                results.update(zip(step.result, value, strict=True))
            elif step.result:
                results[step.result] = value
        return results

    def _statement(self, step: Step, results: dict[str, int]):
        params = step.params
        if any(isinstance(p, Deferred) for p in params):
            params = tuple(p.value(results) if isinstance(p, Deferred) else p for p in params)
        try:
            if step.fetch:
                row = self.fetchall(step.sql, params)[0]
                return row if isinstance(step.result, tuple) else row[0]
            return self.execute(step.sql, params)
        except Exception as error:
            if not step.label:
                raise
            raise StepFailed(f"{step.label} failed: {type(error).__name__}: {str(error).strip()}") from error

    def _stream(self, step: StreamStep, results: dict[str, int]) -> int:
        """`copy_rows` (or `copy_chunks`), raising the error the rows' source raised (the database names it
        only in words); then the results `keys_repeat` and `rejected`."""
        stream = step.rows
        batch = stream.batch
        try:
            copied = self.copy_chunks(step, results) if step.each_chunk else self.copy_rows(step)
        except ReadAgain:
            raise
        except Exception as error:
            if stream.error is not None and stream.error is not error:
                raise stream.error from None
            raise
        if step.distinct_keys and batch.keys_repeat:
            raise ReadAgain(f"a key repeats in {batch.spec.name}'s batch: it cannot go straight into the table")
        results.update(keys_repeat=bool(batch.keys_repeat), rejected=batch.rejected_rows > 0)
        return copied

"""Pandera schemas generated from the catalog.

Dtypes are declared exactly (string[pyarrow], Int16, datetime64[us, UTC], ...)
because Pandera checks an exact dtype in microseconds but a generic `str`
element by element. String columns hold '' for null (the field's rule), so a
nullable string's checks accept '' and a required string rejects it.

`validation` is what the transform runs on every chunk: the same schema, with Pandera
running only the columns that carry checks. A column without checks can only fail on
its dtype or a null, which `FrameValidation` tests directly on the transform's Arrow
columns, with Pandera's own failure names. On the checked columns Pandera's checks run
on every chunk, and its schema validation (which collects the failure cases, at a fixed
~4 ms a column: most of a small chunk's validation, ~1 s of CPU over 1M rows in 13k-row
chunks) only where a check failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

from etl_assets.salesforce.catalog import CatalogColumn, SalesforceObject
from etl_assets.warehouse.convert import ARROW_TYPES, DATE_DTYPE, DATETIME_DTYPE, STRING_DTYPE, mask, to_series
from etl_assets.warehouse.spec import ColumnType
PANDAS_DTYPES = {
    ColumnType.STRING: STRING_DTYPE,
    # Microseconds, not pandas' default nanoseconds: Salesforce's dates run from 1700 to 4000.
    ColumnType.DATETIME: DATETIME_DTYPE,
    ColumnType.DATE: DATE_DTYPE,
    ColumnType.BOOLEAN: "Int16",
    ColumnType.INTEGER: "Int64",
    ColumnType.FLOAT: "Float64",
}


def _string_checks(column: CatalogColumn) -> list[pa.Check]:
    checks = column.checks
    optional = column.nullable
    result = []
    if not column.nullable:
        result.append(pa.Check(lambda s: s != "", name="not_empty", error="a value is required"))
    # Id columns (`type: id`) are extended to 18 characters and checked by the transform (salesforce/ids.py).
    if "isin" in checks:
        allowed = list(checks["isin"]) + ([""] if optional else [])
        result.append(pa.Check.isin(allowed))
    if "max_length" in checks:
        result.append(pa.Check.str_length(max_value=checks["max_length"]))
    if "min_length" in checks:
        n = checks["min_length"]
        result.append(pa.Check(lambda s: (s == "") & optional | (s.str.len() >= n), name=f"min_length_{n}"))
    if "regex" in checks:
        pattern = checks["regex"]
        result.append(
            pa.Check(lambda s: (s == "") & optional | s.str.fullmatch(pattern), name="regex", error=pattern)
        )
    return result


def _number_checks(column: CatalogColumn) -> list[pa.Check]:
    checks = column.checks
    result = []
    if "min" in checks:
        result.append(pa.Check.ge(checks["min"]))
    if "max" in checks:
        result.append(pa.Check.le(checks["max"]))
    if "isin" in checks:
        result.append(pa.Check.isin(checks["isin"]))
    return result


def pandera_column(column: CatalogColumn) -> pa.Column:
    if column.type is ColumnType.STRING:
        checks = _string_checks(column)
        nullable = False  # strings are filled with ''
    else:
        checks = _number_checks(column) if column.type in (ColumnType.INTEGER, ColumnType.FLOAT) else []
        nullable = column.nullable
    return pa.Column(PANDAS_DTYPES[column.type], checks=checks, nullable=nullable, required=False)


@lru_cache(maxsize=256)
def object_schema(obj: SalesforceObject, drift_columns: tuple[str, ...] = ()) -> pa.DataFrameSchema:
    """The schema of `obj`'s transformed frame; drift columns are plain strings."""
    columns = {c.name: pandera_column(c) for c in obj.columns}
    for name in drift_columns:
        columns[name] = pa.Column(STRING_DTYPE, nullable=False, required=False)
    return pa.DataFrameSchema(columns, name=obj.api_name, coerce=False, strict=False)


@dataclass(frozen=True)
class FrameValidation:
    """One object's validation, built once per object (and drift columns) per process."""

    columns: tuple[str, ...]  # the schema's columns in order: failures are reported in this order
    plain: tuple[tuple[str, ColumnType, bool], ...]  # (name, type, nullable) of the columns without checks
    checked: pa.DataFrameSchema | None  # the columns with checks, validated by Pandera
    checked_types: tuple[tuple[str, ColumnType], ...] = ()

    def failures(self, columns: Mapping[str, pyarrow.Array]) -> list[tuple[int, str, str, object]]:
        """(row position, column, check, value) of every row-level failure of the typed columns
        (`convert.ARROW_TYPES`), in column order, as Pandera names them (`not_nullable`, a check's name).
        A column of the wrong type is a bug in the transform, not bad data: it raises.

        Pandera runs every check of the checked columns on every chunk (each `Check` called on the
        column, the call its schema validation makes); the schema's validation, which collects the
        failure cases, runs only on the columns where a check failed or a required value is null,
        and reports exactly what it reports for the whole frame. Dtypes are the conversion's own
        (checked here on the Arrow type) and nulls are counted in Arrow."""
        position = {name: i for i, name in enumerate(self.columns)}
        found: list[tuple[int, int, str, int, object]] = []
        for name, type_, nullable in self.plain:
            if name not in columns:
                continue  # required=False
            array = _typed(name, columns[name], type_)
            if not nullable and array.null_count:
                missing = pd.NaT if type_ in (ColumnType.DATETIME, ColumnType.DATE) else float("nan")  # as Pandera
                found += [(position[name], 0, "not_nullable", int(row), missing)
                          for row in np.flatnonzero(mask(pc.is_null(array)))]
        suspects = {name: to_series(_typed(name, columns[name], type_), type_)
                    for name, type_ in self.checked_types if name in columns}
        suspects = {name: series for name, series in suspects.items() if not self._passes(name, series)}
        if suspects:
            try:
                self.checked.validate(pd.DataFrame(suspects), lazy=True)
            except pandera.errors.SchemaErrors as errors:
                cases = errors.failure_cases
                if cases["index"].isna().any():
                    raise  # a whole-column failure (wrong dtype, missing column): a bug in the transform
                for order, (row, column, check, value) in enumerate(
                        zip(cases["index"], cases["column"], cases["check"], cases["failure_case"]), start=1):
                    found.append((position.get(column, len(position)), order, str(check), int(row), value))
        found.sort(key=lambda f: (f[0], f[1]))
        return [(row, self.columns[pos] if pos < len(self.columns) else "", check, value)
                for pos, _, check, row, value in found]

    def _passes(self, name: str, series: pd.Series) -> bool:
        """Whether Pandera's validation of this column can find nothing: no null where one is not
        allowed, and each of its checks passes (Pandera's own `Check` call, nulls ignored as there)."""
        column = self.checked.columns[name]
        if not column.nullable and series.hasnans:
            return False
        try:
            return all(bool(check(series).check_passed) for check in column.checks)
        except Exception:  # noqa: BLE001 - a check that errs is reported by the validation, as before
            return False


def _typed(name: str, array: pyarrow.Array, type_: ColumnType) -> pyarrow.Array:
    if array.type != ARROW_TYPES[type_]:
        raise TypeError(f"column {name} is {array.type}, expected {ARROW_TYPES[type_]}: the transform is wrong")
    return array


@lru_cache(maxsize=256)
def validation(obj: SalesforceObject, drift_columns: tuple[str, ...] = ()) -> FrameValidation:
    """`object_schema(obj, drift_columns)` split into the columns Pandera must run (those with checks)
    and the rest (dtype and nulls only)."""
    types = {c.name: c.type for c in obj.columns} | {name: ColumnType.STRING for name in drift_columns}
    schema = object_schema(obj, drift_columns)
    plain, checked = [], {}
    for name, column in schema.columns.items():
        if column.checks:
            checked[name] = column
        else:
            plain.append((name, types[name], column.nullable))
    return FrameValidation(
        tuple(schema.columns), tuple(plain),
        pa.DataFrameSchema(checked, name=obj.api_name, coerce=False, strict=False) if checked else None,
        tuple((name, types[name]) for name in checked),
    )

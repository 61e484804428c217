"""Pandera schemas generated from the catalog.

Dtypes are declared exactly (string[pyarrow], Int16, datetime64[us, UTC], ...)
because Pandera checks an exact dtype in microseconds but a generic `str`
element by element. String columns hold '' for null (the field's rule), so a
nullable string's checks accept '' and a required string rejects it.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd
import pandera.pandas as pa

from etl_assets.salesforce.catalog import CatalogColumn, SalesforceObject
from etl_assets.warehouse.convert import DATE_DTYPE, DATETIME_DTYPE
from etl_assets.warehouse.spec import ColumnType

STRING_DTYPE = pd.StringDtype("pyarrow")
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

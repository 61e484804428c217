"""Text to typed pandas columns, with a mask of the values that did not convert.

Shared by every domain, so a value means the same thing in a Salesforce backup and a file feed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.resources.warehouse.spec import ColumnType

TRUE_VALUES = ("true", "1")
FALSE_VALUES = ("false", "0")
# Salesforce numbers hold at most 18 digits: plain digit strings that long convert exactly to
# BIGINT. A decimal or exponent spelling ("42.0", "1e3") is accepted only when it is integral
# and exactly representable as a double (|n| <= 2**53); anything else is rejected, never rounded.
EXACT_INTEGER = r"[+-]?[0-9]{1,18}"
MAX_EXACT_DOUBLE_INTEGER = 2**53
# The instants a pandas datetime64[ns] holds; Arrow parses wider ranges, pandas rejects the rest.
_NS_RANGE = (pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC"))


def convert_column(raw: pd.Series, type_: ColumnType) -> tuple[pd.Series, np.ndarray]:
    """The typed column and a mask of values that were present ('' is absent) but invalid."""
    if type_ is ColumnType.STRING:
        return raw, np.zeros(len(raw), dtype=bool)
    present = (raw != "").to_numpy(dtype=bool, na_value=False)
    if type_ is ColumnType.DATETIME:
        typed = _utc_datetimes(raw)
    elif type_ is ColumnType.DATE:
        typed = pd.to_datetime(raw, format="%Y-%m-%d", errors="coerce")
    elif type_ is ColumnType.BOOLEAN:
        lowered = raw.str.lower()
        is_true = lowered.isin(TRUE_VALUES).to_numpy(dtype=bool, na_value=False)
        is_false = lowered.isin(FALSE_VALUES).to_numpy(dtype=bool, na_value=False)
        values = pd.arrays.IntegerArray(is_true.astype(np.int16), ~(is_true | is_false))
        typed = pd.Series(values, index=raw.index)
    elif type_ is ColumnType.INTEGER:
        typed = _integers(raw, present)
    else:
        numbers = pd.to_numeric(raw.where(raw != ""), errors="coerce").astype("Float64")
        typed = numbers.where(np.isfinite(numbers.to_numpy(dtype=float, na_value=np.nan)))  # no inf, no NaN
    invalid = present & typed.isna().to_numpy(dtype=bool, na_value=True)
    return typed, invalid


def _utc_datetimes(raw: pd.Series) -> pd.Series:
    """ISO 8601 text to UTC instants: Arrow's parser when it takes every value, else pandas'.

    Arrow parses the canonical forms (`2024-05-01T06:32:11.000Z`, `+0000`, `+02:00`) about
    4x faster than `pandas.to_datetime`; a column with any other spelling (no offset, a space,
    more than 6 fractional digits, a bad value) goes through pandas as a whole, so every value
    means the same whichever parser read it.
    """
    try:
        text = pa.array(raw, type=pa.string(), from_pandas=True)
        parsed = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text).cast(pa.timestamp("us", "UTC"))
        low, high = pc.min_max(parsed).values()
        in_range = low.as_py() is None or (_NS_RANGE[0] <= low.as_py() and high.as_py() <= _NS_RANGE[1])
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        in_range = False
    if not in_range:
        return pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
    return pd.Series(parsed.cast(pa.timestamp("ns", "UTC")).to_pandas(), index=raw.index)


def _integers(raw: pd.Series, present: np.ndarray) -> pd.Series:
    """Exact integers (see EXACT_INTEGER); invalid or inexact values become NA."""
    stripped = raw.str.strip()
    digits = stripped.str.fullmatch(EXACT_INTEGER).to_numpy(dtype=bool, na_value=False)
    typed = pd.Series(pd.array([pd.NA] * len(raw), dtype="Int64"), index=raw.index)
    if digits.any():
        try:  # Arrow's parser takes plain digits; a sign or leading '+' needs Python's int()
            values = pa.array(stripped[digits].array).cast(pa.int64()).to_numpy()
        except pa.ArrowInvalid:
            values = np.array([int(v) for v in stripped[digits]], dtype=np.int64)
        typed[digits] = values
    other = present & ~digits
    if other.any():
        numbers = pd.to_numeric(stripped[other], errors="coerce").astype("Float64")
        exact = (numbers % 1 == 0) & (numbers.abs() <= MAX_EXACT_DOUBLE_INTEGER)
        typed[other] = numbers.where(exact).round().astype("Int64")
    return typed

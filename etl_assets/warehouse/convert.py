"""Text to typed pandas columns, with a mask of the values that did not convert.

Shared by every domain, so a value means the same thing in a Salesforce backup and a file feed.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.warehouse.spec import ColumnType

TRUE_VALUES = ("true", "1")
FALSE_VALUES = ("false", "0")
# Salesforce numbers hold at most 18 digits: plain digit strings that long convert exactly to
# BIGINT. A decimal or exponent spelling ("42.0", "1e3") is accepted only when it is integral
# and exactly representable as a double (|n| <= 2**53); anything else is rejected, never rounded.
EXACT_INTEGER = r"[+-]?[0-9]{1,18}"
MAX_EXACT_DOUBLE_INTEGER = 2**53
# The ISO 8601 spellings of an instant accepted beyond Arrow's canonical ones: a calendar date,
# optionally a time (seconds and any fraction optional, truncated to microseconds) and an offset.
_ISO_INSTANT = r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?"
_UTC_OFFSET = r"(Z|[+-]\d{2}(:?\d{2})?)$"
_UTC = pa.timestamp("us", "UTC")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)
DATETIME_DTYPE = pd.DatetimeTZDtype("us", "UTC")
DATE_DTYPE = np.dtype("datetime64[us]")


def convert_column(raw: pd.Series, type_: ColumnType) -> tuple[pd.Series, np.ndarray]:
    """The typed column and a mask of values that were present ('' is absent) but invalid."""
    if type_ is ColumnType.STRING:
        return raw, np.zeros(len(raw), dtype=bool)
    present = (raw != "").to_numpy(dtype=bool, na_value=False)
    if type_ is ColumnType.DATETIME:
        typed = _utc_datetimes(raw, present)
    elif type_ is ColumnType.DATE:
        typed = _dates(raw)
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


def _utc_datetimes(raw: pd.Series, present: np.ndarray) -> pd.Series:
    """ISO 8601 text to UTC instants in microseconds (datetime64[us, UTC]: years 1-9999).

    Arrow's parser takes the usual forms (`2024-05-01T06:32:11.000Z`, `+0000`, `+02:00`, a space
    for the `T`) in one call, and values without an offset (UTC) in a second. A column Arrow
    refuses (more than 6 fractional digits, a bad value) is read value by value with Python's
    parser, restricted to ISO 8601 calendar dates and times. pandas is not used: it works in
    nanoseconds (1677-2262, Salesforce's dates run to 4000) and gives a value without an offset
    the offset of the value before it.
    """
    text = pa.array(raw, type=pa.string(), from_pandas=True)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    try:
        zoned = pc.fill_null(pc.match_substring_regex(text, _UTC_OFFSET), False)
        if pc.all(zoned).as_py():
            parsed = text.cast(_UTC)
        else:
            with_offset = pc.if_else(zoned, text, pa.scalar(None, pa.string())).cast(_UTC)
            without = pc.if_else(zoned, pa.scalar(None, pa.string()), text).cast(pa.timestamp("us")).cast(_UTC)
            parsed = pc.if_else(zoned, with_offset, without)
        return pd.Series(parsed.to_pandas(), index=raw.index, dtype=DATETIME_DTYPE)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    candidates = pc.fill_null(pc.match_substring_regex(text, f"^{_ISO_INSTANT}$"), False).to_numpy(zero_copy_only=False)
    values = raw.to_numpy(dtype=object, na_value="")
    micros = np.full(len(raw), np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    rows = np.flatnonzero(present & candidates)
    micros[rows] = [_micros(values[row]) for row in rows]
    return pd.Series(micros.view("datetime64[us]"), index=raw.index).dt.tz_localize("UTC")


def _micros(text: str) -> int:
    """Microseconds since the epoch of one ISO 8601 instant (UTC without an offset); NaT if invalid."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return np.iinfo(np.int64).min
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return (value - _EPOCH) // _MICROSECOND


def _dates(raw: pd.Series) -> pd.Series:
    """`YYYY-MM-DD` text to dates (datetime64[us] at midnight: years 1-9999); anything else is NA.

    Arrow's strptime is lenient (`2024-02-30` becomes March 1st, `2024-6-1` parses), so a value
    counts only if it formats back to exactly its own text."""
    text = pa.array(raw, type=pa.string(), from_pandas=True)
    parsed = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True)
    exact = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), text)
    parsed = pc.if_else(pc.fill_null(exact, False), parsed, pa.scalar(None, parsed.type))
    return pd.Series(parsed.cast(pa.timestamp("us")).to_pandas(), index=raw.index, dtype=DATE_DTYPE)


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

"""Text to typed pandas columns, with a mask of the values that did not convert.

Shared by every domain, so a value means the same thing in a Salesforce backup and a file feed.
"""

from __future__ import annotations

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
# The ISO 8601 spellings of an instant: a calendar date, optionally a time (`T` or a space; seconds
# and any fraction optional, the fraction truncated to microseconds) and after it an offset (none is UTC).
# The ranges are in the pattern: a value it lets through must be one Arrow's cast takes (no `24:00`).
_ISO_INSTANT = (r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
                r"([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?(Z|[+-]([01]\d|2[0-3])(:?[0-5]\d)?)?)?$")
_UTC_OFFSET = r":\d{2}(\.\d+)?(Z|[+-]\d{2}(:?\d{2})?)$"  # after a time: `2024-05-01` ends in no offset
# A Date field: the date alone, or followed by midnight with zero seconds, a zero fraction and a zero
# offset (Data Export writes `2024-05-01 00:00:00`, other tools `T00:00:00.000Z` or `+0000`).
_MIDNIGHT_DATE = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])(?:[T ]00:00(?::00(?:\.0+)?)?(?:Z|\+00(?::?00)?)?)?$"
_UTC = pa.timestamp("us", "UTC")
DATETIME_DTYPE = pd.DatetimeTZDtype("us", "UTC")
DATE_DTYPE = np.dtype("datetime64[us]")


def convert_column(raw: pd.Series, type_: ColumnType) -> tuple[pd.Series, np.ndarray]:
    """The typed column and a mask of values that were present ('' is absent) but invalid."""
    if type_ is ColumnType.STRING:
        return raw, np.zeros(len(raw), dtype=bool)
    present = (raw != "").to_numpy(dtype=bool, na_value=False)
    if type_ is ColumnType.DATETIME:
        typed = _utc_datetimes(raw)
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


def _utc_datetimes(raw: pd.Series) -> pd.Series:
    """ISO 8601 text to UTC instants in microseconds (datetime64[us, UTC]: years 1-9999).

    Arrow's cast takes every `_ISO_INSTANT` spelling (`2024-05-01T06:32:11.000Z`, `+0000`,
    `-05:00`, a space for the `T`, no offset) but fails the whole column on one bad value or on
    more than 6 fractional digits: then the column is cast again without them (`_castable`), still
    vectorised. pandas is not used: it works in nanoseconds (1677-2262, Salesforce's dates run to
    4000) and gives a value without an offset the offset of the value before it.
    """
    text = pa.array(raw, type=pa.string(), from_pandas=True)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    try:
        parsed = _cast_instants(text)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        parsed = _cast_instants(_castable(text))
    return pd.Series(parsed.to_pandas(), index=raw.index, dtype=DATETIME_DTYPE)


def _castable(text: pa.Array) -> pa.Array:
    """`text` without what Arrow's cast refuses: values not of `_ISO_INSTANT`'s shape and days their
    month does not have become null, fractions beyond microseconds are cut."""
    text = _where(pc.match_substring_regex(text, _ISO_INSTANT), text)
    if pc.any(pc.match_substring_regex(text, r"\.\d{7}")).as_py():
        text = pc.replace_substring_regex(text, r"(\.\d{6})\d+", r"\1")
    return _where(pc.is_valid(_calendar_dates(pc.utf8_slice_codeunits(text, 0, 10))), text)


def _cast_instants(text: pa.Array) -> pa.Array:
    """Arrow's cast to timestamp[us, UTC]: values with an offset in one call, those without (UTC) in another."""
    zoned = pc.fill_null(pc.match_substring_regex(text, _UTC_OFFSET), False)
    if pc.all(zoned).as_py():
        return text.cast(_UTC)
    with_offset = pc.if_else(zoned, text, pa.scalar(None, pa.string())).cast(_UTC)
    without = pc.if_else(zoned, pa.scalar(None, pa.string()), text).cast(pa.timestamp("us")).cast(_UTC)
    return pc.if_else(zoned, with_offset, without)


def _calendar_dates(day: pa.Array) -> pa.Array:
    """`YYYY-MM-DD` text (or null) to timestamp[us] at midnight, null unless the date exists.

    Arrow's strptime is lenient (`2024-02-30` becomes March 1st): the day it read must be the day written."""
    parsed = pc.strptime(day, format="%Y-%m-%d", unit="us", error_is_null=True)
    exact = pc.equal(pc.day(parsed), pc.utf8_slice_codeunits(day, 8, 10).cast(pa.int64()))
    return _where(exact, parsed)


def _where(mask: pa.Array, values: pa.Array) -> pa.Array:
    """`values` where `mask` is true, null elsewhere (a null mask counts as false)."""
    return pc.if_else(pc.fill_null(mask, False), values, pa.scalar(None, values.type))


def _dates(raw: pd.Series) -> pd.Series:
    """Date text to dates (datetime64[us] at midnight: years 1-9999); anything else is NA.

    `YYYY-MM-DD`, alone or followed by a zero time and offset (`_MIDNIGHT_DATE`): Salesforce's Data
    Export writes Date fields as `2024-05-01 00:00:00`, Data Loader may add `T00:00:00.000Z`."""
    text = pa.array(raw, type=pa.string(), from_pandas=True)
    day = _where(pc.match_substring_regex(text, _MIDNIGHT_DATE), pc.utf8_slice_codeunits(text, 0, 10))
    return pd.Series(_calendar_dates(day).to_pandas(), index=raw.index, dtype=DATE_DTYPE)


def dates_with_time(raw: pd.Series) -> np.ndarray:
    """Mask of values that are valid datetimes but no date: a time of day other than midnight UTC.

    A Date field holding `2024-05-01 10:30:00` is rejected either way; this lets the reason say why
    (a field mapped to the wrong type, or an export that shifted dates into a time zone)."""
    present = (raw != "").to_numpy(dtype=bool, na_value=False)
    if not present.any():
        return present
    instants = _utc_datetimes(raw).notna().to_numpy()
    return present & instants & _dates(raw).isna().to_numpy()


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

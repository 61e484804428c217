"""Text to typed columns, with a mask of the values that did not convert.

Shared by every domain, so a value means the same thing in a Salesforce backup and a file feed.
The work is done on Arrow arrays (`convert_array`), which is what the CSV reader yields and the
warehouses load: no pandas round trip per column. `convert_column` is the same conversion for a
pandas Series, with the pandas dtypes the Pandera schemas declare.
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
STRING_DTYPE = pd.StringDtype("pyarrow")
# What `convert_array` returns for each type (a date at midnight, as pandas keeps it: the load casts it to a date).
ARROW_TYPES = {ColumnType.STRING: pa.string(), ColumnType.DATETIME: _UTC, ColumnType.DATE: pa.timestamp("us"),
               ColumnType.BOOLEAN: pa.int16(), ColumnType.INTEGER: pa.int64(), ColumnType.FLOAT: pa.float64()}
PANDAS_DTYPES = {ColumnType.STRING: STRING_DTYPE, ColumnType.DATETIME: DATETIME_DTYPE, ColumnType.DATE: DATE_DTYPE,
                 ColumnType.BOOLEAN: pd.Int16Dtype(), ColumnType.INTEGER: pd.Int64Dtype(),
                 ColumnType.FLOAT: pd.Float64Dtype()}
_NULL_TEXT = pa.scalar(None, pa.string())


def convert_array(text: pa.Array, type_: ColumnType) -> tuple[pa.Array, np.ndarray]:
    """The typed array (`ARROW_TYPES`) and a mask of values that were present ('' and null are absent)
    but invalid."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if type_ is ColumnType.STRING:
        return text, np.zeros(len(text), dtype=bool)
    if type_ is ColumnType.DATETIME:
        typed = utc_instants(text)
    elif type_ is ColumnType.DATE:
        typed = calendar_days(text)
    elif type_ is ColumnType.BOOLEAN:
        lowered = pc.utf8_lower(text)
        is_true = mask(pc.is_in(lowered, value_set=pa.array(TRUE_VALUES)))
        is_false = mask(pc.is_in(lowered, value_set=pa.array(FALSE_VALUES)))
        typed = pa.array(is_true.astype(np.int16), mask=~(is_true | is_false))
    elif type_ is ColumnType.INTEGER:
        typed = _integers(text, present(text))
    else:
        typed = _floats(text)
    return typed, present(text) & mask(pc.is_null(typed))


def convert_column(raw: pd.Series, type_: ColumnType) -> tuple[pd.Series, np.ndarray]:
    """`convert_array` for a Series: the typed column (`PANDAS_DTYPES`; text is returned as it is)."""
    if type_ is ColumnType.STRING:
        return raw, np.zeros(len(raw), dtype=bool)
    typed, invalid = convert_array(pa.array(raw, type=pa.string(), from_pandas=True), type_)
    return to_series(typed, type_, raw.index), invalid


def to_series(typed: pa.Array, type_: ColumnType, index=None) -> pd.Series:
    """A converted array as the pandas Series of its type's dtype."""
    if type_ is ColumnType.STRING:
        return pd.Series(pd.arrays.ArrowStringArray(typed), index=index)
    dtype = PANDAS_DTYPES[type_]
    if type_ in (ColumnType.DATETIME, ColumnType.DATE):
        return pd.Series(typed.to_pandas(), index=index, dtype=dtype)
    return pd.Series(typed.to_pandas(types_mapper={typed.type: dtype}.get), index=index)


def mask(flags: pa.Array) -> np.ndarray:
    """A boolean Arrow array as a numpy mask, null as false."""
    return pc.fill_null(flags, False).to_numpy(zero_copy_only=False)


def present(text: pa.Array) -> np.ndarray:
    """Mask of the values that are there: not '' and not null."""
    return mask(pc.not_equal(text, ""))


def utc_instants(text: pa.Array) -> pa.Array:
    """ISO 8601 text to UTC instants in microseconds (timestamp[us, UTC]: years 1-9999); '' is null.

    Arrow's cast takes every `_ISO_INSTANT` spelling (`2024-05-01T06:32:11.000Z`, `+0000`,
    `-05:00`, a space for the `T`, no offset) but fails the whole column on one bad value or on
    more than 6 fractional digits: then the column is cast again without them (`_castable`), still
    vectorised. pandas is not used: it works in nanoseconds (1677-2262, Salesforce's dates run to
    4000) and gives a value without an offset the offset of the value before it.
    """
    text = pc.if_else(pc.equal(text, ""), _NULL_TEXT, text)
    try:
        return _cast_instants(text)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _cast_instants(_castable(text))


def _castable(text: pa.Array) -> pa.Array:
    """`text` without what Arrow's cast refuses: values not of `_ISO_INSTANT`'s shape and days their
    month does not have become null, fractions beyond microseconds are cut."""
    text = _where(pc.match_substring_regex(text, _ISO_INSTANT), text)
    if pc.any(pc.match_substring_regex(text, r"\.\d{7}")).as_py():
        text = pc.replace_substring_regex(text, r"(\.\d{6})\d+", r"\1")
    return _where(pc.is_valid(_calendar_dates(pc.utf8_slice_codeunits(text, 0, 10))), text)


def _cast_instants(text: pa.Array) -> pa.Array:
    """Arrow's cast to timestamp[us, UTC]: values with an offset in one call, those without (UTC) in another.

    Most files spell every value one way (API and Data Loader exports `...T06:32:11.000Z`, Data Export
    `2024-05-01 06:32:11`), so one cast is tried first: Arrow's zoned cast (an offset on every value, and
    minutes: `_UTC_OFFSET` takes no hour-only `T06Z`), else its naive one (no value has an offset). Either
    gives what splitting the values by `_UTC_OFFSET` gives (`test_value_spellings` holds it to that on
    generated spellings) without the regular expression, the costliest step on 1M values."""
    try:
        zoned = text.cast(_UTC)
        if _minutes_everywhere(text):
            return zoned
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    try:
        return text.cast(pa.timestamp("us")).cast(_UTC)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    return _split_cast(text)


def _minutes_everywhere(text: pa.Array) -> bool:
    """Whether every value present has a ':' at byte 13, the minutes of `YYYY-MM-DDThh:mm`: read off the
    array's buffers (a string kernel slicing 1M values costs more than the cast)."""
    lengths, starts = _lengths(text)
    there = lengths > 0
    if not there.any():
        return True
    if lengths[there].min() < 14:
        return False
    return bool((np.frombuffer(text.buffers()[2], np.uint8)[starts[there] + 13] == ord(":")).all())


def _split_cast(text: pa.Array) -> pa.Array:
    """The cast for a column mixing values with and without an offset: split by `_UTC_OFFSET`."""
    zoned = pc.fill_null(pc.match_substring_regex(text, _UTC_OFFSET), False)
    if pc.all(zoned).as_py():
        return text.cast(_UTC)
    with_offset = pc.if_else(zoned, text, _NULL_TEXT).cast(_UTC)
    without = pc.if_else(zoned, _NULL_TEXT, text).cast(pa.timestamp("us")).cast(_UTC)
    return pc.if_else(zoned, with_offset, without)


def _calendar_dates(day: pa.Array) -> pa.Array:
    """`YYYY-MM-DD` text (or null) to timestamp[us] at midnight, null unless the date exists.

    Arrow's strptime is lenient (`2024-02-30` becomes March 1st): the day it read must be the day written."""
    parsed = pc.strptime(day, format="%Y-%m-%d", unit="us", error_is_null=True)
    exact = pc.equal(pc.day(parsed), pc.utf8_slice_codeunits(day, 8, 10).cast(pa.int64()))
    return _where(exact, parsed)


def _where(flags: pa.Array, values: pa.Array) -> pa.Array:
    """`values` where `flags` is true, null elsewhere (a null flag counts as false)."""
    return pc.if_else(pc.fill_null(flags, False), values, pa.scalar(None, values.type))


def calendar_days(text: pa.Array) -> pa.Array:
    """Date text to dates (timestamp[us] at midnight: years 1-9999); anything else is null.

    `YYYY-MM-DD`, alone or followed by a zero time and offset (`_MIDNIGHT_DATE`): Salesforce's Data
    Export writes Date fields as `2024-05-01 00:00:00`, Data Loader may add `T00:00:00.000Z`."""
    days = _cast_days(text)
    return days if days is not None else _days_by_pattern(text)


def _days_by_pattern(text: pa.Array) -> pa.Array:
    return _calendar_dates(_where(pc.match_substring_regex(text, _MIDNIGHT_DATE), pc.utf8_slice_codeunits(text, 0, 10)))


def _cast_days(text: pa.Array) -> pa.Array | None:
    """`_days_by_pattern` in one cast for the two spellings most files use throughout: every value
    `YYYY-MM-DD`, or every value `YYYY-MM-DD 00:00:00` (Data Export). Arrow's cast reads the date as the
    pattern and the calendar check do (`test_value_spellings` holds it to that); None for any other file."""
    lengths, starts = _lengths(text)
    present_values = lengths > 0
    if not present_values.any():
        return None
    width = int(lengths[present_values].max())
    if width not in (10, 19) or int(lengths[present_values].min()) != width:
        return None
    if width == 19:
        data = np.frombuffer(text.buffers()[2], np.uint8)
        tails = data[starts[present_values][:, None] + np.arange(10, 19)]
        if not (tails == _MIDNIGHT_TAIL).all():
            return None
    try:
        return pc.if_else(pc.equal(text, ""), _NULL_TEXT, text).cast(pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


_MIDNIGHT_TAIL = np.frombuffer(b" 00:00:00", np.uint8)


def _lengths(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Each value's length in bytes (0 for null) and where it starts in the value buffer."""
    bounds = np.frombuffer(text.buffers()[1], np.int32)[text.offset:text.offset + len(text) + 1]
    lengths = np.diff(bounds)
    if text.null_count:
        lengths[mask(pc.is_null(text))] = 0
    return lengths, bounds[:-1]


def dates_with_time(raw: pd.Series | pa.Array) -> np.ndarray:
    """Mask of values that are valid datetimes but no date: a time of day other than midnight UTC.

    A Date field holding `2024-05-01 10:30:00` is rejected either way; this lets the reason say why
    (a field mapped to the wrong type, or an export that shifted dates into a time zone)."""
    text = raw if isinstance(raw, (pa.Array, pa.ChunkedArray)) else pa.array(raw, type=pa.string(), from_pandas=True)
    there = present(text)
    if not there.any():
        return there
    return there & ~mask(pc.is_null(utc_instants(text))) & mask(pc.is_null(calendar_days(text)))


def _integers(text: pa.Array, there: np.ndarray) -> pa.Array:
    """Exact integers (see EXACT_INTEGER); invalid or inexact values become null."""
    stripped = pc.utf8_trim_whitespace(text)
    digits = mask(pc.match_substring_regex(stripped, f"^({EXACT_INTEGER})$"))
    values, valid = np.zeros(len(text), dtype=np.int64), np.zeros(len(text), dtype=bool)
    if digits.any():
        taken = stripped if digits.all() else stripped.filter(pa.array(digits))
        try:  # Arrow's parser takes plain digits; a sign or leading '+' needs Python's int()
            values[digits] = taken.cast(pa.int64()).to_numpy()
        except pa.ArrowInvalid:
            values[digits] = np.array([int(v) for v in taken.to_pylist()], dtype=np.int64)
        valid |= digits
    other = there & ~digits
    if other.any():  # "42.0", "3.5E8": pandas' parser, then integral and exact only
        numbers = pd.to_numeric(to_series(stripped.filter(pa.array(other)), ColumnType.STRING),
                                errors="coerce").astype("Float64")
        exact = (numbers % 1 == 0) & (numbers.abs() <= MAX_EXACT_DOUBLE_INTEGER)
        integral = numbers.where(exact).round().astype("Int64")
        values[other] = integral.to_numpy(dtype=np.int64, na_value=0)
        valid[other] = integral.notna().to_numpy()
    return pa.array(values, mask=~valid)


def _floats(text: pa.Array) -> pa.Array:
    """Numbers as pandas' parser reads them; '' and what is no finite number are null."""
    raw = to_series(text, ColumnType.STRING)
    numbers = pd.to_numeric(raw.where(raw != ""), errors="coerce").astype("Float64")
    finite = numbers.where(np.isfinite(numbers.to_numpy(dtype=float, na_value=np.nan)))  # no inf, no NaN
    return pa.array(finite.array, type=pa.float64(), from_pandas=True)

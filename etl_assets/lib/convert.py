"""Text to typed pandas columns, with a mask of the values that did not convert."""

from __future__ import annotations

import numpy as np
import pandas as pd

from etl_assets.resources.warehouse.spec import ColumnType

TRUE_VALUES = ("true", "1")
FALSE_VALUES = ("false", "0")


def convert_column(raw: pd.Series, type_: ColumnType) -> tuple[pd.Series, np.ndarray]:
    """The typed column and a mask of values that were present ('' is absent) but invalid."""
    if type_ is ColumnType.STRING:
        return raw, np.zeros(len(raw), dtype=bool)
    present = (raw != "").to_numpy(dtype=bool, na_value=False)
    if type_ is ColumnType.DATETIME:
        typed = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
    elif type_ is ColumnType.DATE:
        typed = pd.to_datetime(raw, format="%Y-%m-%d", errors="coerce")
    elif type_ is ColumnType.BOOLEAN:
        lowered = raw.str.lower()
        is_true = lowered.isin(TRUE_VALUES).to_numpy(dtype=bool, na_value=False)
        is_false = lowered.isin(FALSE_VALUES).to_numpy(dtype=bool, na_value=False)
        values = pd.arrays.IntegerArray(is_true.astype(np.int16), ~(is_true | is_false))
        typed = pd.Series(values, index=raw.index)
    else:
        numbers = pd.to_numeric(raw.where(raw != ""), errors="coerce")
        if type_ is ColumnType.INTEGER:
            numbers = numbers.where(numbers % 1 == 0)
            typed = numbers.astype("Float64").round().astype("Int64")
        else:
            typed = numbers.astype("Float64")
    invalid = present & typed.isna().to_numpy(dtype=bool, na_value=True)
    return typed, invalid

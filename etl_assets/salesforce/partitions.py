"""One partition per backup folder: differential (e.g. 20240501_Differential) or full (20240501_Full).

Both kinds share one partitions definition, named as it was when every folder was
differential (existing instances hold that name). Keys sort by date, then suffix.
"""

import datetime as dt
import os
import re

import dagster as dg

differential_folders = dg.DynamicPartitionsDefinition(name="salesforce_differential_folders")

BACKUP_PREFIX = "backup"
DIFFERENTIAL_SUFFIX = "_Differential"
DEFAULT_FULL_BACKUP_SUFFIX = "_Full"
FULL_BACKUP_SUFFIX_ENV = "ETL_ASSETS_FULL_BACKUP_SUFFIX"
FOLDER_DATE = re.compile(r"^(\d{8})(_[A-Za-z0-9]+)$")


def full_backup_suffix() -> str:
    """The suffix of full-backup folders, read when asked so a deployment can set it in its environment."""
    suffix = os.environ.get(FULL_BACKUP_SUFFIX_ENV, "") or DEFAULT_FULL_BACKUP_SUFFIX
    if not re.fullmatch(r"_[A-Za-z0-9]+", suffix) or suffix == DIFFERENTIAL_SUFFIX:
        raise ValueError(f"{FULL_BACKUP_SUFFIX_ENV}={suffix!r}: expected '_' then letters or digits, "
                         f"other than {DIFFERENTIAL_SUFFIX}")
    return suffix


def full_backup_date(name: str) -> dt.date | None:
    """The date of a full-backup folder; None for any other name."""
    match = FOLDER_DATE.match(name)
    if not match or match.group(2) != full_backup_suffix():
        return None
    try:
        return dt.datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:  # 20241399 is not a date
        return None


def is_backup_folder(name: str) -> bool:
    """A differential folder is any 8 digits then the suffix, as before; a full one needs a real date,
    which its load writes as the time rows were deleted by."""
    match = FOLDER_DATE.match(name)
    return bool(match and match.group(2) == DIFFERENTIAL_SUFFIX) or full_backup_date(name) is not None

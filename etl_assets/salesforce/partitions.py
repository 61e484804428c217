"""One partition per differential backup folder (e.g. 20240501_Differential)."""

import re

import dagster as dg

differential_folders = dg.DynamicPartitionsDefinition(name="salesforce_differential_folders")

BACKUP_PREFIX = "backup"
FOLDER_PATTERN = re.compile(r"^\d{8}_Differential$")


def is_differential_folder(name: str) -> bool:
    return bool(FOLDER_PATTERN.match(name))

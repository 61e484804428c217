"""What the warehouse needs to know about a table, independent of the engine.

Every domain describes its tables with `TableSpec`; the engines turn it into DDL
and merges. Identifiers are validated here once, so SQL builders can quote them
without ever putting data into SQL text.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

import pyarrow as pa

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
QUOTABLE = re.compile(r"^[a-z_][a-z0-9_]*$")  # also our own lineage columns, which start with "_"
MAX_IDENTIFIER_LENGTH = 63  # PostgreSQL's limit, the tightest of our targets


class InvalidIdentifier(ValueError):
    """A table or column name that cannot safely become a warehouse identifier."""


def identifier(name: str) -> str:
    """Lower-case `name` and check it is a plain identifier; raise otherwise."""
    lowered = name.lower()
    if not IDENTIFIER.match(lowered) or len(lowered) > MAX_IDENTIFIER_LENGTH:
        raise InvalidIdentifier(
            f"{name!r} is not a valid identifier: use letters, digits and underscores, "
            f"starting with a letter, at most {MAX_IDENTIFIER_LENGTH} characters"
        )
    return lowered


# Letters Unicode does not decompose into an ASCII letter and a mark.
_ASCII_FOLDS = str.maketrans({"ß": "ss", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
                              "đ": "d", "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "TH", "ı": "i"})
_NOT_IDENTIFIER = re.compile(r"[^a-z0-9_]+")


@lru_cache(maxsize=1 << 16)  # 300 discovered objects ask for ~25,000 names, each several times, at every load
def column_name(field: str) -> str:
    """The warehouse column for a CSV header field, by one documented rule (docs/salesforce-values.md).

    Surrounding blanks are dropped; letters are folded to ASCII (`é` to `e`, `ß` to `ss`) and
    lower-cased; each run of other characters (`.`, spaces, punctuation, letters with no ASCII
    form) becomes one `_`, and `_` at either end goes; a name starting with a digit gets `c_`
    in front; a name over 63 characters keeps 54 and a hash of the whole field. API names are
    already identifiers and only lower-case (`litify_pm__Matter__c` is `litify_pm__matter__c`).
    Returns '' when nothing is left, which callers refuse.
    """
    folded = unicodedata.normalize("NFKD", field.strip().translate(_ASCII_FOLDS))
    ascii_only = "".join(c if c.isascii() else ("" if unicodedata.combining(c) else " ") for c in folded)
    name = _NOT_IDENTIFIER.sub("_", ascii_only.lower()).strip("_")
    if name and name[0].isdigit():
        name = "c_" + name
    if len(name) > MAX_IDENTIFIER_LENGTH:
        digest = hashlib.blake2b(field.encode(), digest_size=4).hexdigest()
        name = name[: MAX_IDENTIFIER_LENGTH - 9].rstrip("_") + "_" + digest
    return name


def quote(name: str) -> str:
    """Quote an identifier that `identifier` has already validated."""
    if not QUOTABLE.match(name) or len(name) > MAX_IDENTIFIER_LENGTH:
        raise InvalidIdentifier(f"refusing to quote unvalidated identifier {name!r}")
    return f'"{name}"'


class ColumnType(str, Enum):
    STRING = "string"
    DATETIME = "datetime"
    DATE = "date"
    BOOLEAN = "boolean"
    INTEGER = "integer"
    FLOAT = "float"

    @property
    def arrow(self) -> pa.DataType:
        return _ARROW_TYPES[self]


_ARROW_TYPES = {
    ColumnType.STRING: pa.string(),
    ColumnType.DATETIME: pa.timestamp("us", tz="UTC"),
    ColumnType.DATE: pa.date32(),
    ColumnType.BOOLEAN: pa.int16(),  # the field's rule: booleans are stored as 0/1 (SMALLINT)
    ColumnType.INTEGER: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
}


LONG_TEXT_POLICIES = ("truncate", "super", "reject")


@dataclass(frozen=True)
class Column:
    """A table column. `source_name` is the field it came from where that was spelled otherwise;
    `long_text` says what a target with a text limit (Redshift) does with a longer value:
    `truncate` to the limit and record it in the row's LOAD_CHANGES, store the column as `super`
    (strings up to 16 MB), or `reject` the row."""

    name: str
    type: ColumnType
    nullable: bool = True
    source_name: str | None = field(default=None, compare=False)
    long_text: str = field(default="truncate", compare=False)
    policy: str | None = field(default=None, compare=False)  # what reaches the column, if not the value as read

    def __post_init__(self) -> None:
        if self.name not in SYSTEM_COLUMNS:
            identifier(self.name)
        if self.long_text not in LONG_TEXT_POLICIES:
            raise ValueError(f"long_text must be one of {', '.join(LONG_TEXT_POLICIES)}, not {self.long_text!r}")


@dataclass(frozen=True)
class TextLimits:
    """The longest text value, in UTF-8 bytes, a target stores in a text column (`varchar_bytes`)
    and in a column stored as SUPER (`super_bytes`); None where there is no limit."""

    varchar_bytes: int | None = None
    super_bytes: int | None = None

    def limit(self, column: Column) -> int | None:
        return self.super_bytes if column.long_text == "super" else self.varchar_bytes


# Columns the platform itself adds to a table's own columns (named so no source field can be).
# LOAD_CHANGES: a JSON list of what the load changed in the row's values (a truncated text), or null.
LOAD_CHANGES = "_load_changes"
SYSTEM_COLUMNS = {LOAD_CHANGES}


# Lineage columns every merged table carries; their order is also the tie-break
# after the version column, so the same rows always win whatever the run order.
SOURCE_PARTITION = "_source_partition"
SOURCE_FILE = "_source_file"
SOURCE_LINE = "_source_line"
LOADED_AT = "_loaded_at"
LINEAGE_COLUMNS = (
    (SOURCE_PARTITION, pa.string()),
    (SOURCE_FILE, pa.string()),
    (SOURCE_LINE, pa.int64()),
)

# What a table tracking deletions carries (docs/full-backups-and-hard-deletes.md): the mark, and the
# evidence it is computed from, one table per schema of the full snapshots loaded and one per table of
# the newest full snapshot holding each key (`<table>_full_backup_ids`).
DELETED_IN_SOURCE_AT = "_deleted_in_source_at"
FULL_BACKUPS = "etl_full_backups"
FULL_BACKUP_IDS = "_full_backup_ids"


@dataclass(frozen=True)
class TableSpec:
    """A warehouse table. With a primary key and version column it can be merged (SCD Type 1:
    one row per key); without, it is loaded by appending files or replacing its contents."""

    schema: str
    name: str
    primary_key: str | None
    version_column: str | None
    columns: tuple[Column, ...]
    description: str = ""
    # Full snapshots of the source mark the rows they lack as deleted in source (see plan.py).
    track_deletions: bool = False
    # Every version of every key is kept in `<schema>_history.<name>` by the same load (history.py).
    history: bool = False
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        identifier(self.schema)
        identifier(self.name)
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise InvalidIdentifier(f"duplicate column names in {self.name}: {names}")
        for key in (self.primary_key, self.version_column):
            if key is not None and key not in names:
                raise InvalidIdentifier(f"{key!r} is not a column of {self.name}")

    @property
    def rejects_name(self) -> str:
        return f"{self.name}_rejects"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def arrow_schema(self) -> pa.Schema:
        """The staged (Parquet) layout: the columns, then the lineage columns."""
        fields = [pa.field(c.name, c.type.arrow) for c in self.columns]
        fields += [pa.field(name, type_) for name, type_ in LINEAGE_COLUMNS]
        return pa.schema(fields)


REJECTS_SCHEMA = pa.schema(
    [
        (SOURCE_PARTITION, pa.string()),
        (SOURCE_FILE, pa.string()),
        (SOURCE_LINE, pa.int64()),
        ("column_name", pa.string()),
        ("reason", pa.string()),
        ("raw_record", pa.string()),
    ]
)

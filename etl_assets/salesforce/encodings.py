"""Which encoding a backup's files are read in: the deployment's setting, per folder where needed.

The Data Export service writes the encoding chosen when the export was scheduled (UTF-8,
ISO-8859-1, Shift_JIS, ...); Data Loader and the APIs write UTF-8. Read when asked (like the
full-backup suffix), so a deployment sets them in its environment:

- ETL_ASSETS_SALESFORCE_ENCODING: the encoding of every backup file (default `utf-8`, a BOM allowed).
- ETL_ASSETS_SALESFORCE_FOLDER_ENCODINGS: exceptions by backup folder, `pattern=encoding` pairs
  separated by `;` or `,`, the first matching pattern (shell-style, `2023*_Full`) wins; for one
  landing zone that receives exports of different encodings.
- ETL_ASSETS_SALESFORCE_FALLBACK_ENCODING: when a folder's encoding is UTF-8 and a file is not
  valid UTF-8 (checked strictly over the whole file), the file is read in this one instead and the
  load says so (default `windows-1252`, the superset of ISO-8859-1 that Western exports use); `none`
  refuses such a file, naming the setting to use.
"""

from __future__ import annotations

import codecs
import fnmatch
import os
from dataclasses import dataclass

ENCODING_ENV = "ETL_ASSETS_SALESFORCE_ENCODING"
FOLDER_ENCODINGS_ENV = "ETL_ASSETS_SALESFORCE_FOLDER_ENCODINGS"
FALLBACK_ENV = "ETL_ASSETS_SALESFORCE_FALLBACK_ENCODING"
DEFAULT_ENCODING, DEFAULT_FALLBACK = "utf-8", "windows-1252"
SETTING_HINT = (f"set {ENCODING_ENV} (or {FOLDER_ENCODINGS_ENV} for this folder) to the export's encoding, "
                f"e.g. iso-8859-1, or {FALLBACK_ENV} to the encoding to try when a file is not UTF-8")


class EncodingSettingError(ValueError):
    """An encoding setting names no codec, or is malformed (the message names the variable)."""


@dataclass(frozen=True)
class FolderEncoding:
    encoding: str  # what the folder's files are written in
    fallback: str | None  # tried for a file that is not valid UTF-8, when `encoding` is UTF-8


def _codec(variable: str, name: str) -> str:
    try:
        return codecs.lookup(name.strip()).name
    except LookupError:
        raise EncodingSettingError(f"{variable}={name!r}: not an encoding Python knows "
                                   "(e.g. utf-8, iso-8859-1, windows-1252, shift_jis)") from None


def folder_encodings(env=None) -> list[tuple[str, str]]:
    """The (pattern, codec) pairs of ETL_ASSETS_SALESFORCE_FOLDER_ENCODINGS, validated."""
    text = (os.environ if env is None else env).get(FOLDER_ENCODINGS_ENV, "")
    pairs = []
    for item in text.replace(",", ";").split(";"):
        if not item.strip():
            continue
        pattern, sep, name = item.partition("=")
        if not sep or not pattern.strip():
            raise EncodingSettingError(f"{FOLDER_ENCODINGS_ENV}: {item.strip()!r} is not pattern=encoding "
                                       "(e.g. 2023*_Full=iso-8859-1)")
        pairs.append((pattern.strip(), _codec(FOLDER_ENCODINGS_ENV, name)))
    return pairs


def folder_encoding(folder: str, env=None) -> FolderEncoding:
    """The encoding of the files of one backup folder (see the module docstring)."""
    env = os.environ if env is None else env
    encoding = _codec(ENCODING_ENV, env.get(ENCODING_ENV) or DEFAULT_ENCODING)
    for pattern, name in folder_encodings(env):
        if fnmatch.fnmatchcase(folder, pattern):
            encoding = name
            break
    fallback_text = (env.get(FALLBACK_ENV) or DEFAULT_FALLBACK).strip()
    fallback = None if fallback_text.lower() in ("none", "off", "") else _codec(FALLBACK_ENV, fallback_text)
    return FolderEncoding(encoding, fallback if encoding == "utf-8" else None)

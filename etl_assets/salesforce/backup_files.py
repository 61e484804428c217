"""The files of a backup folder, object by object: CSVs in object folders, and the CSV members of
the Data Export service's zip archives.

A backup tool writes `backup/<folder>/<Object>/<file>.csv`; the Data Export service delivers
`.zip` archives of one `<Object>.csv` each (several archives per export), which land as
`backup/<folder>/<archive>.zip`. Both are object files here, so the sensor, discovery and the
load treat them alike. A member is named `<archive key>/<member>` (its lineage, `_source_file`)
and read streamed from the archive, never unpacked to disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from etl_assets.landing.archives import ArchiveError, ArchiveMember, MemberSource, archive_members, is_archive
from etl_assets.landing.csv_reader import ByteSource
from etl_assets.landing.zone import LandedFile, LandingZone
from etl_assets.salesforce.partitions import BACKUP_PREFIX, is_backup_folder


@dataclass(frozen=True)
class ObjectFile:
    """One CSV of one object in one backup folder."""

    folder: str
    object_name: str  # as the folder or the member spells it
    landed: LandedFile  # key: the CSV's, or `<archive key>/<member>`; size and time fingerprint it
    member: ArchiveMember | None = None

    @property
    def key(self) -> str:
        return self.landed.key

    @contextmanager
    def source(self, landing_zone: LandingZone) -> Iterator[Path | ByteSource]:
        """Where the bytes are while the context lasts: a local path, or the member's stream."""
        if self.member is not None:
            yield MemberSource(landing_zone, self.member)
            return
        with landing_zone.local_copy(self.landed.key) as path:
            yield path


@dataclass(frozen=True)
class Unreadable:
    """A key under backup/ that holds object files but cannot be opened (a corrupt archive)."""

    key: str
    folder: str
    reason: str


def _is_csv(name: str) -> bool:
    return name.lower().endswith(".csv")


def object_files_of(landing_zone: LandingZone, landed: LandedFile) -> list[ObjectFile] | Unreadable | None:
    """The object files a landed key holds: one for a CSV in an object folder, each CSV member of an
    archive in a backup folder, an Unreadable for an archive that cannot be opened, None for
    anything else (keys that are not object files)."""
    parts = landed.key.split("/")
    if len(parts) < 3 or parts[0] != BACKUP_PREFIX or not is_backup_folder(parts[1]):
        return None
    folder = parts[1]
    if len(parts) == 4 and _is_csv(parts[3]) and parts[2]:
        return [ObjectFile(folder, parts[2], landed)]
    if len(parts) == 3 and is_archive(parts[2]):
        try:
            members = archive_members(landing_zone, landed.key)
        except ArchiveError as error:
            return Unreadable(landed.key, folder, str(error))
        files = []
        for member in members:
            name = PurePosixPath(member.member).name
            if _is_csv(name) and name[:-4]:
                files.append(ObjectFile(folder, name[:-4], LandedFile(member.key, member.size, landed.modified, landed.etag),
                                        member))
        return files
    return None


def list_object_files(landing_zone: LandingZone, prefix: str, start_after: str = ""
                      ) -> Iterator[ObjectFile | Unreadable | LandedFile]:
    """Every object file under `prefix` (archives expanded), an Unreadable for an archive that
    cannot be opened, and each other key as its LandedFile (the caller reports or skips it)."""
    yield from expand(landing_zone, landing_zone.list_files(prefix, start_after=start_after))


def expand(landing_zone: LandingZone, landed_files: Iterable[LandedFile]
           ) -> Iterator[ObjectFile | Unreadable | LandedFile]:
    for landed in landed_files:
        found = object_files_of(landing_zone, landed)
        if found is None:
            yield landed
        elif isinstance(found, Unreadable):
            yield found
        else:
            yield from found

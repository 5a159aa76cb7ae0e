"""The SQLite header of a store file, checked field by field at unlock (before any write).

SQLite itself refuses a bad magic string, page size or payload fractions, and ``PRAGMA
quick_check`` catches the size and freelist fields; many other fields are read by no one, so a
flipped byte there would pass unnoticed. A store's header must hold exactly the values below,
its change counter must equal its version-valid-for number (SQLite writes both at every commit
in rollback-journal mode), and the two fields that need the key (schema cookie, library
version) are compared with the sealed integrity record after unlock (``store.py``).
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

from client.storage.errors import StoreCorrupted
from client.storage.sealing import FORMAT_VERSION

APPLICATION_ID = 0x6D786E74  # "mxnt"
PAGE_SIZE = 4096
HEADER_LEN = 100
_V = sqlite3.sqlite_version_info
SQLITE_VERSION_NUMBER = _V[0] * 1_000_000 + _V[1] * 1000 + _V[2]

#: Header fields that must hold exactly these bytes in a store (offset, expected, what).
_HEADER_FIXED: tuple[tuple[int, bytes, str], ...] = (
    (0, b"SQLite format 3\x00", "magic string"),
    (16, struct.pack(">H", PAGE_SIZE), "page size"),
    (18, b"\x01\x01", "file format versions (rollback journal)"),
    (20, b"\x00\x40\x20\x20", "reserved space and payload fractions"),
    (44, struct.pack(">I", 4), "schema format"),
    (48, bytes(4), "default cache size"),
    (52, bytes(4), "auto-vacuum root page"),
    (56, struct.pack(">I", 1), "text encoding"),
    (60, struct.pack(">I", FORMAT_VERSION), "user version (the store format)"),
    (64, bytes(4), "incremental vacuum flag"),
    (68, struct.pack(">I", APPLICATION_ID), "application id"),
    (72, bytes(20), "reserved bytes"),
)


def check_header(header: bytes, path: Path) -> None:
    """The SQLite header fields a store must hold (see the module docstring); SQLite itself and
    ``quick_check`` catch the others (sizes, freelist), the key-dependent ones (schema cookie,
    library version) are compared with the integrity record after unlock."""
    if len(header) < HEADER_LEN:
        raise StoreCorrupted(f"{path} is not a store database (too short)")
    for offset, expected, what in _HEADER_FIXED:
        if header[offset : offset + len(expected)] != expected:
            raise StoreCorrupted(f"{path}: SQLite header field {what} is not a store's")
    if header[24:28] != header[92:96]:
        raise StoreCorrupted(
            f"{path}: SQLite header fields change counter and version-valid-for disagree"
        )




def check_keyed_fields(header: bytes, path: Path, *, cookie: int, version: int) -> None:
    """The fields only the integrity record knows: the schema cookie (moves only when this
    program changes the schema or vacuums) and the SQLite library version that last wrote
    (the recorded one, or this process's own: it writes the failure counter before unlock)."""
    if header[40:44] != struct.pack(">I", cookie & 0xFFFFFFFF):
        raise StoreCorrupted(f"{path}: SQLite header field schema cookie was changed")
    if struct.unpack(">I", header[96:100])[0] not in (version, SQLITE_VERSION_NUMBER):
        raise StoreCorrupted(f"{path}: SQLite header field library version was changed")

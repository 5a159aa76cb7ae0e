"""The inner message format: what the messenger puts inside the end-to-end ciphertext.

A canonical msgpack array (``mixcore.encoding``: arrays only, one encoding per value)::

    [1, kind, uid(16), ttl_s(u32), body]

``uid`` names the message for receipts (random, never reused); ``ttl_s`` is the sender's
disappearing timer for this message (0: keep). ``body`` by kind:

============  ===========================================================================
``text``      ``[text]``
``file``      ``[name, data, sha256(32)]`` (the receiver checks the hash)
``receipt``   ``[[uid, ...]]``: these messages were stored by the recipient's daemon
``timer``     ``[seconds, accept]``: a proposal (``accept`` false) or its acceptance
``gupdate``   ``[group_id(16), name, [[name_hint, card], ...]]``: the full member list
``gtext``     ``[group_id(16), text]``
``gfile``     ``[group_id(16), name, data, sha256(32)]``
============  ===========================================================================

The group id exists only here, inside the ciphertext: providers never see it. Everything is
checked strictly; anything else raises :class:`InnerFormatError`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from client.messenger.errors import InnerFormatError, RecipientWouldRefuse, TextTooLong
from mixcore.encoding import (
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
    pack,
    unpack_canonical,
)
from mixcore.errors import DecodeError

INNER_VERSION = 1
UID_LEN = 16
GROUP_ID_LEN = 16
MAX_TEXT = 65536
MAX_NAME = 255
MAX_FILE = 1 << 20
MAX_TTL = 366 * 24 * 3600
MAX_MEMBERS = 64
KINDS = ("text", "file", "receipt", "timer", "gupdate", "gtext", "gfile")


def new_uid() -> bytes:
    return os.urandom(UID_LEN)


@dataclass(frozen=True, slots=True)
class Inner:
    kind: str
    uid: bytes
    ttl: int
    body: tuple[Any, ...]

    def encode(self) -> bytes:
        return pack([INNER_VERSION, self.kind, self.uid, self.ttl, list(self.body)])


def text(body: str, ttl: int = 0) -> Inner:
    return Inner("text", new_uid(), ttl, (body,))


def file(name: str, data: bytes, ttl: int = 0) -> Inner:
    return Inner("file", new_uid(), ttl, (name, data, hashlib.sha256(data).digest()))


def receipt(uids: list[bytes]) -> Inner:
    return Inner("receipt", new_uid(), 0, (list(uids),))


def timer(seconds: int, accept: bool) -> Inner:
    return Inner("timer", new_uid(), 0, (seconds, accept))


def group_update(group_id: bytes, name: str, members: list[list[Any]]) -> Inner:
    return Inner("gupdate", new_uid(), 0, (group_id, name, members))


def group_text(group_id: bytes, body: str, ttl: int = 0) -> Inner:
    return Inner("gtext", new_uid(), ttl, (group_id, body))


def group_file(group_id: bytes, name: str, data: bytes, ttl: int = 0) -> Inner:
    return Inner("gfile", new_uid(), ttl, (group_id, name, data, hashlib.sha256(data).digest()))


def _file_body(items: list[Any]) -> tuple[str, bytes, bytes]:
    name = expect_str(items[0], "file name", max_len=MAX_NAME)
    data = expect_bytes(items[1], "file data", max_len=MAX_FILE)
    digest = expect_bytes(items[2], "file hash", length=32)
    if hashlib.sha256(data).digest() != digest:
        raise DecodeError("attachment hash mismatch")
    return name, data, digest


def decode(data: bytes) -> Inner:
    """Parse and check one inner message; :class:`InnerFormatError` for anything else."""
    try:
        version, kind, uid, ttl, body = expect_list(
            unpack_canonical(data, max_bytes=MAX_FILE + 4096), 5, "inner message"
        )
        expect_int(version, "inner version", lo=1, hi=INNER_VERSION)
        if kind not in KINDS:
            raise DecodeError("unknown inner message kind")
        uid = expect_bytes(uid, "uid", length=UID_LEN)
        ttl = expect_int(ttl, "ttl", lo=0, hi=MAX_TTL)
        if not isinstance(body, list):
            raise DecodeError("body: expected an array")
        parsed: tuple[Any, ...]
        if kind == "text":
            (t,) = expect_list(body, 1, "text")
            parsed = (expect_str(t, "text", max_len=MAX_TEXT),)
        elif kind == "file":
            parsed = _file_body(expect_list(body, 3, "file"))
        elif kind == "receipt":
            (uids,) = expect_list(body, 1, "receipt")
            if not isinstance(uids, list) or not 1 <= len(uids) <= 256:
                raise DecodeError("receipt: bad uid list")
            parsed = ([expect_bytes(u, "uid", length=UID_LEN) for u in uids],)
        elif kind == "timer":
            seconds, accept = expect_list(body, 2, "timer")
            if not isinstance(accept, bool):
                raise DecodeError("timer: accept flag")
            parsed = (expect_int(seconds, "timer", lo=0, hi=MAX_TTL), accept)
        elif kind == "gupdate":
            gid, name, members = expect_list(body, 3, "group update")
            if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
                raise DecodeError("group update: bad member list")
            checked = []
            for m in members:
                hint, card = expect_list(m, 2, "member")
                checked.append(
                    [expect_str(hint, "member name", max_len=MAX_NAME),
                     expect_bytes(card, "member card", max_len=1024)]
                )
            parsed = (
                expect_bytes(gid, "group id", length=GROUP_ID_LEN),
                expect_str(name, "group name", max_len=MAX_NAME),
                checked,
            )
        elif kind == "gtext":
            gid, t = expect_list(body, 2, "group text")
            parsed = (
                expect_bytes(gid, "group id", length=GROUP_ID_LEN),
                expect_str(t, "text", max_len=MAX_TEXT),
            )
        else:  # gfile
            items = expect_list(body, 4, "group file")
            gid = expect_bytes(items[0], "group id", length=GROUP_ID_LEN)
            parsed = (gid, *_file_body(items[1:]))
    except DecodeError as exc:
        raise InnerFormatError(f"malformed inner message: {exc}") from None
    return Inner(kind, uid, ttl, parsed)


def check_acceptable(message: Inner) -> None:
    """Refuse, before anything is encrypted or queued, a message the recipient would reject:
    its encoding goes through the recipient's own :func:`decode`. A too-long text gets its
    own sentence (the limit a person can act on)."""
    if message.kind in ("text", "gtext") and len(message.body[-1]) > MAX_TEXT:
        raise TextTooLong(len(message.body[-1]), MAX_TEXT)
    try:
        decode(message.encode())
    except InnerFormatError as exc:
        raise RecipientWouldRefuse(f"the recipient would refuse this message ({exc})") from None

"""The inner message format: what the messenger puts inside the end-to-end ciphertext.

One frozen dataclass per kind; :func:`encode` and :func:`decode` are the only places that
know the bytes. A canonical msgpack array (``mixcore.encoding``: arrays only, one encoding per
value)::

    [1, kind, uid(16), ttl_s(u32), body]

``uid`` names the message for receipts (random, never reused); ``ttl_s`` is the sender's
disappearing timer for this message (0: keep). ``body`` by kind:

============  ==================  ===============================================================
``text``      :class:`Text`       ``[text]``
``file``      :class:`File`       ``[name, data, sha256(32)]`` (the receiver checks the hash)
``receipt``   :class:`Receipt`    ``[[uid, ...]]``: these messages were stored by the recipient
``timer``     :class:`Timer`      ``[seconds, accept]``: a proposal (``accept`` false) or its
                                  acceptance
``gupdate``   :class:`GroupUpdate` ``[group_id(16), name, [[name_hint, card], ...]]``: the full
                                  member list
``gtext``     :class:`GroupText`  ``[group_id(16), text]``
============  ==================  ===============================================================

The group id exists only here, inside the ciphertext: providers never see it. Everything is
checked strictly; anything else raises :class:`InnerFormatError`. (The bytes are those of the
earlier, untyped version of this module, unchanged: ``INNER_VERSION`` is still 1.)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
MAX_CARD = 1024


def new_uid() -> bytes:
    return os.urandom(UID_LEN)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class _Kind:
    """What every kind has: a uid, the sender's timer, and its bytes."""

    __slots__ = ()
    kind: ClassVar[str]
    uid: bytes
    ttl: int

    def encode(self) -> bytes:
        return encode(self)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class Text(_Kind):
    kind: ClassVar[str] = "text"
    text: str = field(repr=False)
    uid: bytes = field(default_factory=new_uid)
    ttl: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class File(_Kind):
    kind: ClassVar[str] = "file"
    name: str
    data: bytes = field(repr=False)
    sha256: bytes
    uid: bytes = field(default_factory=new_uid)
    ttl: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt(_Kind):
    kind: ClassVar[str] = "receipt"
    uids: tuple[bytes, ...]
    uid: bytes = field(default_factory=new_uid)
    ttl: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Timer(_Kind):
    kind: ClassVar[str] = "timer"
    seconds: int
    accept: bool
    uid: bytes = field(default_factory=new_uid)
    ttl: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupUpdate(_Kind):
    kind: ClassVar[str] = "gupdate"
    gid: bytes
    name: str
    members: tuple[tuple[str, bytes], ...]
    """``(name hint, card)`` of every member, the creator included."""
    uid: bytes = field(default_factory=new_uid)
    ttl: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupText(_Kind):
    kind: ClassVar[str] = "gtext"
    gid: bytes
    text: str = field(repr=False)
    uid: bytes = field(default_factory=new_uid)
    ttl: int = 0


Inner = Text | File | Receipt | Timer | GroupUpdate | GroupText
"""Any inner message."""
Content = Text | File | GroupText
"""The kinds that a conversation stores (the others are control messages)."""


# -- building ----------------------------------------------------------------------------------


def text(body: str, ttl: int = 0) -> Text:
    return Text(text=body, ttl=ttl)


def file(name: str, data: bytes, ttl: int = 0) -> File:
    return File(name=name, data=data, sha256=_digest(data), ttl=ttl)


def receipt(uids: list[bytes]) -> Receipt:
    return Receipt(uids=tuple(uids))


def timer(seconds: int, accept: bool) -> Timer:
    return Timer(seconds=seconds, accept=accept)


def group_update(group_id: bytes, name: str, members: list[tuple[str, bytes]]) -> GroupUpdate:
    return GroupUpdate(gid=group_id, name=name, members=tuple((h, c) for h, c in members))


def group_text(group_id: bytes, body: str, ttl: int = 0) -> GroupText:
    return GroupText(gid=group_id, text=body, ttl=ttl)


# -- the bytes ---------------------------------------------------------------------------------


def encode(message: Inner) -> bytes:
    """The one encoder: ``[1, kind, uid, ttl, body]`` (body by kind, see the module doc)."""
    body: list[Any]
    match message:
        case Text(text=t):
            body = [t]
        case File(name=name, data=data, sha256=digest):
            body = [name, data, digest]
        case Receipt(uids=uids):
            body = [list(uids)]
        case Timer(seconds=seconds, accept=accept):
            body = [seconds, accept]
        case GroupUpdate(gid=gid, name=name, members=members):
            body = [gid, name, [[hint, card] for hint, card in members]]
        case GroupText(gid=gid, text=t):
            body = [gid, t]
    return pack([INNER_VERSION, message.kind, message.uid, message.ttl, body])


def _file_body(items: list[Any]) -> tuple[str, bytes, bytes]:
    name = expect_str(items[0], "file name", max_len=MAX_NAME)
    data = expect_bytes(items[1], "file data", max_len=MAX_FILE)
    digest = expect_bytes(items[2], "file hash", length=32)
    if _digest(data) != digest:
        raise DecodeError("attachment hash mismatch")
    return name, data, digest


def _gid(value: Any) -> bytes:
    return expect_bytes(value, "group id", length=GROUP_ID_LEN)


def _body(kind: Any, uid: bytes, ttl: int, body: list[Any]) -> Inner:
    match kind:
        case "text":
            (t,) = expect_list(body, 1, "text")
            return Text(text=expect_str(t, "text", max_len=MAX_TEXT), uid=uid, ttl=ttl)
        case "file":
            name, data, digest = _file_body(expect_list(body, 3, "file"))
            return File(name=name, data=data, sha256=digest, uid=uid, ttl=ttl)
        case "receipt":
            (uids,) = expect_list(body, 1, "receipt")
            if not isinstance(uids, list) or not 1 <= len(uids) <= 256:
                raise DecodeError("receipt: bad uid list")
            return Receipt(uids=tuple(expect_bytes(u, "uid", length=UID_LEN) for u in uids),
                           uid=uid, ttl=ttl)
        case "timer":
            seconds, accept = expect_list(body, 2, "timer")
            if not isinstance(accept, bool):
                raise DecodeError("timer: accept flag")
            return Timer(seconds=expect_int(seconds, "timer", lo=0, hi=MAX_TTL), accept=accept,
                         uid=uid, ttl=ttl)
        case "gupdate":
            gid, name, members = expect_list(body, 3, "group update")
            if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
                raise DecodeError("group update: bad member list")
            checked = []
            for m in members:
                hint, card = expect_list(m, 2, "member")
                checked.append((expect_str(hint, "member name", max_len=MAX_NAME),
                                expect_bytes(card, "member card", max_len=MAX_CARD)))
            return GroupUpdate(gid=_gid(gid), name=expect_str(name, "group name",
                                                              max_len=MAX_NAME),
                               members=tuple(checked), uid=uid, ttl=ttl)
        case "gtext":
            gid, t = expect_list(body, 2, "group text")
            return GroupText(gid=_gid(gid), text=expect_str(t, "text", max_len=MAX_TEXT),
                             uid=uid, ttl=ttl)
    raise DecodeError("unknown inner message kind")


def decode(data: bytes) -> Inner:
    """Parse and check one inner message; :class:`InnerFormatError` for anything else."""
    try:
        version, kind, uid, ttl, body = expect_list(
            unpack_canonical(data, max_bytes=MAX_FILE + 4096), 5, "inner message"
        )
        expect_int(version, "inner version", lo=1, hi=INNER_VERSION)
        if not isinstance(kind, str) or kind not in KINDS:
            raise DecodeError("unknown inner message kind")
        uid = expect_bytes(uid, "uid", length=UID_LEN)
        ttl = expect_int(ttl, "ttl", lo=0, hi=MAX_TTL)
        if not isinstance(body, list):
            raise DecodeError("body: expected an array")
        return _body(kind, uid, ttl, body)
    except DecodeError as exc:
        raise InnerFormatError(f"malformed inner message: {exc}") from None


KINDS = tuple(k.kind for k in (Text, File, Receipt, Timer, GroupUpdate, GroupText))


def check_acceptable(message: Inner) -> None:
    """Refuse, before anything is encrypted or queued, a message the recipient would reject:
    its encoding goes through the recipient's own :func:`decode`. A too-long text gets its
    own sentence (the limit a person can act on)."""
    if isinstance(message, Text | GroupText) and len(message.text) > MAX_TEXT:
        raise TextTooLong(len(message.text), MAX_TEXT)
    try:
        decode(message.encode())
    except InnerFormatError as exc:
        raise RecipientWouldRefuse(f"the recipient would refuse this message ({exc})") from None

"""Attachments: a file sent to a contact inside one end-to-end message.

The name is cut to its last path part (no folders travel), the data is limited by the inner
format (1 MiB) and, after encryption, by what the transport carries in one message; the
SHA-256 travels with it and the recipient's decoder checks it. A received file is kept in
the conversation's record; reading shows its name, size and hash, and its bytes only when
asked (``with_data``). Saving it to disk under a safe name is the CLI's (``mixnet read
--save``).
"""

from __future__ import annotations

import os
from typing import Any

from client.messenger import inner
from client.messenger.errors import MessageTooLong
from client.messenger.records import MessageRecord


def clean_name(file_name: str) -> str:
    """The name that travels: the last path part, at most 255 characters."""
    return os.path.basename(file_name)[: inner.MAX_NAME] or "attachment"


def message(file_name: str, data: bytes, ttl: int, *, max_message_len: int) -> inner.File:
    """The inner message for an attachment, or :class:`MessageTooLong` (nothing is queued)."""
    if len(data) > inner.MAX_FILE:
        raise MessageTooLong(len(data), max_message_len)
    return inner.file(clean_name(file_name), data, ttl)


def view(record: MessageRecord, *, with_data: bool) -> dict[str, Any]:
    """How a reply shows a stored attachment."""
    out: dict[str, Any] = {"name": record.file_name, "size": len(record.file_data),
                           "sha256": record.file_sha256.hex()}
    if with_data:
        out["data"] = record.file_data
    return out

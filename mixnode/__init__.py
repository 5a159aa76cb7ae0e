"""The mix and provider roles: packet processor, delay pool, replay filter, mailboxes."""

from __future__ import annotations

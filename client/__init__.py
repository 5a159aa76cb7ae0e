"""The user agent: Poisson sender with cover traffic, ARQ, ratchet, local store, daemon."""

from __future__ import annotations

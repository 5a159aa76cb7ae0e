"""The directory authority role: descriptor registry, per-epoch consensus, its HTTP service."""

from __future__ import annotations

"""Attacks whose success the simulations measure against the parameters."""

from __future__ import annotations

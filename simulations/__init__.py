"""Traffic-analysis models, adversaries and parameter sweeps."""

from __future__ import annotations

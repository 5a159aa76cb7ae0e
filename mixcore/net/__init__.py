"""I/O adapters shared by every role (the only part of ``mixcore`` that imports trio)."""

from __future__ import annotations

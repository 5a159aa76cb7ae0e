"""The protocol core shared by every role: parameters, Sphinx packets, keys, descriptors, the
consensus document and the link protocol. Nothing here does I/O except ``mixcore.net``."""

from __future__ import annotations

import mixcore.encoding as _encoding  # noqa: F401  (runs the msgpack >= 1 guard on import)

__version__ = "0.1.0"

"""Canonical msgpack encoding, and the guard against sphinxmix's obsolete msgpack-python.

Everything signed (descriptors, consensus documents) or sent as a control message is a msgpack
*array* of integers, byte strings, text strings, booleans, 64-bit floats and nested arrays (never
maps): the encoder always picks the shortest form for these, so an object has exactly one
encoding. :func:`unpack_canonical`
re-encodes what it decoded and refuses input that is not byte-for-byte that encoding, so two
different byte strings can never carry the same signed meaning.

The guard: sphinxmix depends on ``msgpack-python`` 0.5.6, which installs into the same
``msgpack/`` folder as ``msgpack``. Depending on install order either can win; 0.5.x lacks the
API we use, so importing this module with it fails loudly with the fix instead of misbehaving.
"""

from __future__ import annotations

from typing import Any

import msgpack

from mixcore.errors import DecodeError

MSGPACK_FIX = "pip install --force-reinstall --no-deps 'msgpack>=1'"


def _check_msgpack_version() -> None:
    version = getattr(msgpack, "version", (0,))
    if tuple(version) < (1, 0):
        raise ImportError(
            f"msgpack {'.'.join(map(str, version))} is installed, but mixnet needs msgpack >= 1.0 "
            "(sphinxmix's dependency msgpack-python 0.5.x overwrote it). Fix: " + MSGPACK_FIX
        )


_check_msgpack_version()

#: Hard bound on any canonical structure we decode (the largest is a consensus document).
MAX_DOCUMENT_BYTES = 1 << 20


def pack(obj: Any) -> bytes:
    """Encode ``obj`` canonically (arrays only, no maps)."""
    packed: bytes = msgpack.packb(obj, use_bin_type=True, strict_types=True)
    return packed


def unpack_canonical(data: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Decode one canonical msgpack object; anything else raises :class:`DecodeError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("expected bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise DecodeError(f"encoded object is {len(data)} bytes, limit {max_bytes}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise DecodeError(f"not a msgpack object: {type(exc).__name__}") from None
    try:
        again = pack(obj)
    except Exception:  # ext types and the like: not part of our canonical subset
        raise DecodeError("contains a type outside the canonical subset") from None
    if again != data:
        raise DecodeError("not in canonical encoding")
    if _contains_map(obj):
        raise DecodeError("maps are not part of the canonical subset")
    return obj


def _contains_map(obj: Any) -> bool:
    if isinstance(obj, dict):
        return True
    if isinstance(obj, list):
        return any(_contains_map(item) for item in obj)
    return False


def expect_list(obj: Any, length: int, what: str) -> list[Any]:
    """Check ``obj`` is an array of exactly ``length`` items."""
    if not isinstance(obj, list) or len(obj) != length:
        raise DecodeError(f"{what}: expected an array of {length} items")
    return obj


def expect_bytes(
    obj: Any, what: str, *, length: int | None = None, max_len: int = 1 << 16
) -> bytes:
    """Check ``obj`` is a byte string, of exactly ``length`` bytes when given."""
    if not isinstance(obj, bytes):
        raise DecodeError(f"{what}: expected bytes")
    if length is not None and len(obj) != length:
        raise DecodeError(f"{what}: expected {length} bytes, got {len(obj)}")
    if len(obj) > max_len:
        raise DecodeError(f"{what}: {len(obj)} bytes exceeds {max_len}")
    return obj


def expect_int(obj: Any, what: str, *, lo: int, hi: int) -> int:
    """Check ``obj`` is an integer (not a bool) within ``[lo, hi]``."""
    if not isinstance(obj, int) or isinstance(obj, bool) or not lo <= obj <= hi:
        raise DecodeError(f"{what}: expected an integer in [{lo}, {hi}]")
    return obj


def expect_float(obj: Any, what: str) -> float:
    """Check ``obj`` is a float (a 64-bit msgpack float)."""
    if not isinstance(obj, float):
        raise DecodeError(f"{what}: expected a float")
    return obj


def expect_str(obj: Any, what: str, *, max_len: int) -> str:
    """Check ``obj`` is a text string of at most ``max_len`` characters."""
    if not isinstance(obj, str) or len(obj) > max_len:
        raise DecodeError(f"{what}: expected text of at most {max_len} characters")
    return obj

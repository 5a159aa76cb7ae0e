"""Sphinx packets (placeholder header; full module being written)."""

from __future__ import annotations

from petlib.ec import EcGroup, EcPt

#: NIST P-256 (OpenSSL nid 415), see docs/protocol.md for why not sphinxmix's default P-224.
GROUP_NID = 415
MIX_PUBLIC_KEY_LEN = 33
_GROUP = EcGroup(GROUP_NID)


def is_valid_mix_public_key(data: bytes) -> bool:
    """True when ``data`` is a compressed point of the Sphinx group (not infinity)."""
    if not isinstance(data, bytes) or len(data) != MIX_PUBLIC_KEY_LEN or data[0] not in (2, 3):
        return False
    try:
        point = EcPt.from_binary(data, _GROUP)
    except Exception:  # petlib raises bare Exception on invalid encodings
        return False
    return bool(_GROUP.check_point(point))


def generate_mix_keypair() -> tuple[bytes, bytes]:
    """A fresh (secret, public) pair: 32-byte big-endian scalar and compressed point."""
    from petlib.ec import POINT_CONVERSION_COMPRESSED

    secret = _GROUP.order().random()
    public = (secret * _GROUP.generator()).export(POINT_CONVERSION_COMPRESSED)
    return secret.binary().rjust(32, b"\x00"), public

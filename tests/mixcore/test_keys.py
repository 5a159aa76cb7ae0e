"""Identity and link keys, signatures, and key files (0600, refused when others can read)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mixcore.errors import KeyFileError, SignatureError
from mixcore.keys import (
    IdentityKey,
    LinkKey,
    load_identity_key,
    load_link_key,
    save_identity_key,
    save_link_key,
    signature_valid,
    verify_signature,
)


def test_sign_and_verify() -> None:
    key = IdentityKey.generate()
    sig = key.sign(b"message")
    verify_signature(key.public, sig, b"message")
    with pytest.raises(SignatureError):
        verify_signature(key.public, sig, b"messagE")
    with pytest.raises(SignatureError):
        verify_signature(IdentityKey.generate().public, sig, b"message")
    with pytest.raises(SignatureError):
        verify_signature(key.public, sig[:-1], b"message")
    assert not signature_valid(key.public, bytes(64), b"message")


def test_key_files_round_trip_with_mode_0600(tmp_path: Path) -> None:
    identity, link = IdentityKey.generate(), LinkKey.generate()
    save_identity_key(tmp_path / "id.key", identity)
    save_link_key(tmp_path / "link.key", link)
    for name in ("id.key", "link.key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    assert load_identity_key(tmp_path / "id.key").public == identity.public
    assert load_link_key(tmp_path / "link.key").public == link.public
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id.key", "link.key"]  # no temp files


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "id.key"
    save_identity_key(path, IdentityKey.generate())
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_identity_key(path)


def test_wrong_kind_missing_and_malformed(tmp_path: Path) -> None:
    save_link_key(tmp_path / "link.key", LinkKey.generate())
    with pytest.raises(KeyFileError, match="expected 'ed25519-identity'"):
        load_identity_key(tmp_path / "link.key")
    with pytest.raises(KeyFileError, match="does not exist"):
        load_identity_key(tmp_path / "nope.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not json")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a valid"):
        load_identity_key(bad)
    short = tmp_path / "short.key"
    short.write_text(json.dumps({"version": 1, "kind": "ed25519-identity", "secret": "00"}))
    short.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_identity_key(short)


def test_secrets_never_in_repr_or_errors(tmp_path: Path) -> None:
    key = IdentityKey.generate()
    secret_hex = key.secret_bytes().hex()
    assert secret_hex not in repr(key)
    path = tmp_path / "id.key"
    save_identity_key(path, key)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError) as info:
        load_identity_key(path)
    assert secret_hex not in str(info.value)
    link = LinkKey.generate()
    assert link.secret_bytes().hex() not in repr(link)

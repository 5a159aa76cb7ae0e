"""A user's end-to-end identity: an Ed25519 signing key (the identity everyone pins), an X25519
identity key for the X3DH handshake, and a short list of signed prekeys (X25519).

The newest prekey goes on new contact cards; older ones are kept for ``keep`` rotations so that
cards already handed out keep working, then deleted (deleting an old prekey's secret is what
gives initial messages forward secrecy against a later theft of the device).
"""

from __future__ import annotations

from dataclasses import dataclass

from client.e2e.errors import SessionStateError
from client.e2e.primitives import x25519_generate, x25519_public
from mixcore.encoding import expect_bytes, expect_int, expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError
from mixcore.keys import IdentityKey

IDENTITY_STATE_VERSION = 1
MAX_PREKEY_ID = (1 << 32) - 1
DEFAULT_KEEP_PREKEYS = 3


@dataclass(frozen=True, slots=True)
class Prekey:
    """One signed prekey (the signature lives on each card that carries it)."""

    prekey_id: int
    secret: bytes
    public: bytes

    def __repr__(self) -> str:
        return f"Prekey(id={self.prekey_id}, public={self.public[:6].hex()}…)"


class UserIdentity:
    """Ed25519 identity + X25519 identity + signed prekeys. Mutable only through
    :meth:`rotate_prekey`; persist with :meth:`to_bytes` (it contains secrets: seal it)."""

    __slots__ = ("_dh_secret", "_prekeys", "dh_public", "signing")

    def __init__(self, signing: IdentityKey, dh_secret: bytes, prekeys: list[Prekey]) -> None:
        if not prekeys:
            raise ValueError("an identity needs at least one prekey")
        self.signing = signing
        self._dh_secret = dh_secret
        self.dh_public = x25519_public(dh_secret)
        self._prekeys = list(prekeys)

    @classmethod
    def generate(cls) -> UserIdentity:
        dh_secret, _ = x25519_generate()
        secret, public = x25519_generate()
        return cls(IdentityKey.generate(), dh_secret, [Prekey(1, secret, public)])

    @property
    def identity_key(self) -> bytes:
        """The Ed25519 public key: what contacts pin and safety numbers are made of."""
        return self.signing.public

    @property
    def dh_secret(self) -> bytes:
        return self._dh_secret

    @property
    def current_prekey(self) -> Prekey:
        return self._prekeys[-1]

    @property
    def prekeys(self) -> tuple[Prekey, ...]:
        return tuple(self._prekeys)

    def prekey(self, prekey_id: int) -> Prekey | None:
        return next((p for p in self._prekeys if p.prekey_id == prekey_id), None)

    def rotate_prekey(self, *, keep: int = DEFAULT_KEEP_PREKEYS) -> Prekey:
        """Make a new current prekey and delete all but the ``keep`` newest (including it)."""
        if keep < 1:
            raise ValueError("keep at least the new prekey")
        secret, public = x25519_generate()
        new_id = self.current_prekey.prekey_id % MAX_PREKEY_ID + 1
        self._prekeys.append(Prekey(new_id, secret, public))
        del self._prekeys[:-keep]
        return self._prekeys[-1]

    def sign(self, message: bytes) -> bytes:
        return self.signing.sign(message)

    def to_bytes(self) -> bytes:
        return pack(
            [
                IDENTITY_STATE_VERSION,
                self.signing.secret_bytes(),
                self._dh_secret,
                [[p.prekey_id, p.secret] for p in self._prekeys],
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> UserIdentity:
        try:
            version, signing, dh_secret, prekeys = expect_list(
                unpack_canonical(data), 4, "identity"
            )
            expect_int(version, "identity version", lo=1, hi=IDENTITY_STATE_VERSION)
            signing = expect_bytes(signing, "signing key", length=32)
            dh_secret = expect_bytes(dh_secret, "dh key", length=32)
            if not isinstance(prekeys, list) or not 1 <= len(prekeys) <= 64:
                raise DecodeError("identity: bad prekey list")
            keys = []
            for item in prekeys:
                pid, secret = expect_list(item, 2, "prekey")
                pid = expect_int(pid, "prekey id", lo=1, hi=MAX_PREKEY_ID)
                secret = expect_bytes(secret, "prekey secret", length=32)
                keys.append(Prekey(pid, secret, x25519_public(secret)))
        except DecodeError as exc:
            raise SessionStateError(f"identity state: {exc}") from None
        return cls(IdentityKey.from_secret(signing), dh_secret, keys)

    def __repr__(self) -> str:
        return f"UserIdentity({self.identity_key[:6].hex()}…, prekeys={len(self._prekeys)})"

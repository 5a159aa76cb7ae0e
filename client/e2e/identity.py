"""A user's end-to-end identity: an Ed25519 signing key (the identity everyone pins), an X25519
identity key for the X3DH handshake, and a short list of signed prekeys (X25519).

The newest prekey goes on new contact cards. The messenger rotates it every
:data:`PREKEY_ROTATION_S` (its clock-driven upkeep) and erases an old prekey's secret
:data:`PREKEY_GRACE_S` after it was replaced (:meth:`UserIdentity.erase_prekeys`): cards
already handed out keep starting conversations during the grace period, and deleting the
secret is what gives recorded initial messages forward secrecy against a later theft of the
device. Each prekey remembers when it was made (``created_at``, on the injected clock).
"""

from __future__ import annotations

from dataclasses import dataclass

from client.e2e.errors import SessionStateError
from client.e2e.primitives import x25519_generate, x25519_public
from mixcore.encoding import expect_bytes, expect_int, expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError
from mixcore.keys import IdentityKey

IDENTITY_STATE_VERSION = 2
MAX_PREKEY_ID = (1 << 32) - 1
DEFAULT_KEEP_PREKEYS = 3
MAX_PREKEYS = 64
PREKEY_ROTATION_S = 7 * 86400.0
"""A new signed prekey every week."""
PREKEY_GRACE_S = 28 * 86400.0
"""An old prekey's secret is erased four weeks after it was replaced: a card handed out
starts conversations for at least that long; a first message recorded by an observer opens
with a key stolen at most rotation + grace (five weeks) later, never after."""


@dataclass(frozen=True, slots=True)
class Prekey:
    """One signed prekey (the signature lives on each card that carries it)."""

    prekey_id: int
    secret: bytes
    public: bytes
    created_at: float = 0.0
    """When it was made (0: unknown, an identity of the first format)."""

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
    def generate(cls, *, now: float = 0.0) -> UserIdentity:
        dh_secret, _ = x25519_generate()
        secret, public = x25519_generate()
        return cls(IdentityKey.generate(), dh_secret, [Prekey(1, secret, public, now)])

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

    def rotate_prekey(self, *, keep: int = DEFAULT_KEEP_PREKEYS, now: float = 0.0) -> Prekey:
        """Make a new current prekey and delete all but the ``keep`` newest (including it)."""
        if not 1 <= keep <= MAX_PREKEYS:
            raise ValueError(f"keep 1 to {MAX_PREKEYS} prekeys")
        secret, public = x25519_generate()
        new_id = self.current_prekey.prekey_id % MAX_PREKEY_ID + 1
        self._prekeys.append(Prekey(new_id, secret, public, now))
        del self._prekeys[:-keep]
        return self._prekeys[-1]

    def rotation_due(self, now: float, period: float = PREKEY_ROTATION_S) -> bool:
        return now - self.current_prekey.created_at >= period

    def stamp_unknown_times(self, now: float) -> bool:
        """Give prekeys of unknown age (``created_at`` 0) the time ``now``; True if any."""
        changed = False
        for i, p in enumerate(self._prekeys):
            if p.created_at <= 0:
                self._prekeys[i] = Prekey(p.prekey_id, p.secret, p.public, now)
                changed = True
        return changed

    def erase_prekeys(self, now: float, grace: float = PREKEY_GRACE_S) -> list[int]:
        """Delete every old prekey replaced at least ``grace`` seconds ago (a prekey is
        replaced when the next one is made); returns the erased ids. The current one stays."""
        erased = [
            p.prekey_id
            for p, nxt in zip(self._prekeys, self._prekeys[1:], strict=False)
            if now - nxt.created_at >= grace
        ]
        self._prekeys = [p for p in self._prekeys if p.prekey_id not in erased]
        return erased

    def sign(self, message: bytes) -> bytes:
        return self.signing.sign(message)

    def to_bytes(self) -> bytes:
        return pack(
            [
                IDENTITY_STATE_VERSION,
                self.signing.secret_bytes(),
                self._dh_secret,
                [[p.prekey_id, p.secret, p.created_at] for p in self._prekeys],
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
            if not isinstance(prekeys, list) or not 1 <= len(prekeys) <= MAX_PREKEYS:
                raise DecodeError("identity: bad prekey list")
            keys = []
            for item in prekeys:
                if version == 1:
                    pid, secret = expect_list(item, 2, "prekey")
                    created = 0.0
                else:
                    pid, secret, created = expect_list(item, 3, "prekey")
                    if not isinstance(created, float | int) or isinstance(created, bool):
                        raise DecodeError("prekey time")
                pid = expect_int(pid, "prekey id", lo=1, hi=MAX_PREKEY_ID)
                secret = expect_bytes(secret, "prekey secret", length=32)
                keys.append(Prekey(pid, secret, x25519_public(secret), float(created)))
        except DecodeError as exc:
            raise SessionStateError(f"identity state: {exc}") from None
        return cls(IdentityKey.from_secret(signing), dh_secret, keys)

    def __repr__(self) -> str:
        return f"UserIdentity({self.identity_key[:6].hex()}…, prekeys={len(self._prekeys)})"

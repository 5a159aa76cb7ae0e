"""Replay protection: a Bloom filter of Sphinx replay tags per mix key.

A replayed packet yields the same tag under the same key, so a node that remembers every tag it
saw for a key can drop replays, which would otherwise let an attacker follow a packet by sending
it twice and watching which output repeats. Tags are only valid per key, and keys rotate each
epoch, so one filter per mix key suffices and is erased with its key.

Sizing: ``capacity`` tags at false-positive rate ``fp_rate`` (a false positive drops one honest
packet, which ARQ resends). The filter is saved periodically and on shutdown and loaded at start,
so a restart opens no replay window; a missing or corrupt file on load is an error the operator
sees, never a silently empty filter.

Tags are outputs of a keyed hash, already uniform, so the filter hashes a tag by taking its first
16 bytes as an integer: deterministic across processes (Python's ``hash`` is salted) and free.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rbloom import Bloom

from mixcore.errors import MixnetError


class ReplayFilterError(MixnetError):
    """A replay filter file cannot be read or does not match its configuration."""


def _tag_hash(tag: bytes) -> int:
    return int.from_bytes(tag[:16], "big", signed=True)


class ReplayFilter:
    def __init__(self, capacity: int, fp_rate: float = 1e-6) -> None:
        if capacity < 1 or not 0 < fp_rate < 1:
            raise ValueError("replay filter needs capacity >= 1 and 0 < fp_rate < 1")
        self.capacity = capacity
        self.fp_rate = fp_rate
        self._bloom = Bloom(capacity, fp_rate, hash_func=_tag_hash)
        self.inserted = 0

    def check_and_add(self, tag: bytes) -> bool:
        """True if ``tag`` is new (and now remembered); False if it was (probably) seen."""
        if tag in self._bloom:
            return False
        self._bloom.add(tag)
        self.inserted += 1
        return True

    def __contains__(self, tag: bytes) -> bool:
        return tag in self._bloom

    @property
    def size_in_bits(self) -> int:
        return int(self._bloom.size_in_bits)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file, fsync, rename): a crash leaves the old or the new file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"{self.capacity} {self.fp_rate!r} {self.inserted}\n".encode()
        fd, tmp = tempfile.mkstemp(prefix=".replay-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header)
                f.write(self._bloom.save_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReplayFilter:
        try:
            data = Path(path).read_bytes()
            header, _, body = data.partition(b"\n")
            capacity_s, fp_s, inserted_s = header.decode().split(" ")
            capacity, fp_rate, inserted = int(capacity_s), float(fp_s), int(inserted_s)
            bloom = Bloom.load_bytes(body, _tag_hash)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise ReplayFilterError(f"cannot load replay filter {path}: {exc}") from None
        instance = cls(capacity, fp_rate)
        if bloom.size_in_bits != instance.size_in_bits:
            raise ReplayFilterError(f"replay filter {path} does not match its stated size")
        instance._bloom = bloom
        instance.inserted = inserted
        return instance

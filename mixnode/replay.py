"""Replay protection: a Bloom filter of Sphinx replay tags per mix key.

A replayed packet yields the same tag under the same key, so a node that remembers every tag it
saw for a key can drop replays, which would otherwise let an attacker follow a packet by sending
it twice and watching which output repeats. Tags are only valid per key, and keys rotate each
epoch, so one filter per mix key suffices and is erased with its key.

Sizing: ``capacity`` tags at false-positive rate ``fp_rate`` (a false positive drops one honest
packet, which ARQ resends).

Persistence without a replay window: the whole filter is saved periodically and on shutdown, and
every new tag is also appended (one unbuffered ``write`` per batch of packets) to a journal
beside it, which a save truncates. Loading reads the filter and replays the journal, so a node
killed with SIGKILL between two saves still remembers every tag it acted on. (A power loss can
lose the journal's unflushed tail; the operating system, not the process, holds it.) A corrupt
file on load is an error the operator sees, never a silently empty filter.

Tags are outputs of a keyed hash, already uniform, so the filter hashes a tag by taking its first
16 bytes as an integer: deterministic across processes (Python's ``hash`` is salted) and free.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from rbloom import Bloom

from mixcore.errors import MixnetError
from mixcore.files import write_atomic


class ReplayFilterError(MixnetError):
    """A replay filter file cannot be read or does not match its configuration."""


def _tag_hash(tag: bytes) -> int:
    return int.from_bytes(tag[:16], "big", signed=True)


TAG_LEN = 16


class ReplayFilter:
    def __init__(self, capacity: int, fp_rate: float = 1e-6) -> None:
        if capacity < 1 or not 0 < fp_rate < 1:
            raise ValueError("replay filter needs capacity >= 1 and 0 < fp_rate < 1")
        self.capacity = capacity
        self.fp_rate = fp_rate
        self._bloom = Bloom(capacity, fp_rate, hash_func=_tag_hash)
        self.inserted = 0
        self._journal: int | None = None

    def remember(self, tag: bytes) -> bool:
        """True if ``tag`` is new (and now remembered in memory); False if it was (probably)
        seen. Writes nothing: a node's core checks tags with this and its shell journals the
        new ones with :meth:`append_journal`, a batch in one ``write``, before any packet of
        the batch can leave."""
        if tag in self._bloom:
            return False
        self._bloom.add(tag)
        self.inserted += 1
        return True

    def check_and_add(self, tag: bytes) -> bool:
        """:meth:`remember`, and a new tag is journaled at once (when journaling is on)."""
        if not self.remember(tag):
            return False
        self.append_journal((tag,))
        return True

    def append_journal(self, tags: Iterable[bytes]) -> None:
        """Append ``tags`` (already remembered) to the journal in one unbuffered ``write``."""
        if self._journal is None:
            return
        data = b"".join(tag[:TAG_LEN] for tag in tags)
        view = memoryview(data)
        while view:  # a regular file takes it whole; a short write is finished, not dropped
            view = view[os.write(self._journal, view) :]

    @staticmethod
    def journal_path(path: str | os.PathLike[str]) -> Path:
        return Path(f"{os.fspath(path)}.journal")

    @classmethod
    def open(cls, path: str | os.PathLike[str], capacity: int, fp_rate: float) -> ReplayFilter:
        """The filter persisted at ``path`` (plus its journal), or a new one; journaling on."""
        path = Path(path)
        instance = cls.load(path) if path.exists() else cls(capacity, fp_rate)
        journal = cls.journal_path(path)
        if journal.exists():
            data = journal.read_bytes()
            for i in range(0, len(data) - len(data) % TAG_LEN, TAG_LEN):
                tag = data[i : i + TAG_LEN]
                if tag not in instance._bloom:
                    instance._bloom.add(tag)
                    instance.inserted += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        instance._journal = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return instance

    def close(self) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None

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
        write_atomic(path, header + self._bloom.save_bytes())
        if self._journal is not None:  # everything journaled is now in the saved filter
            os.ftruncate(self._journal, 0)

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

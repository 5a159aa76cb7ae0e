"""A network's bootstrap: the one line a newcomer needs to join it (its authorities' keys and
URLs, and how many of them must sign).

Everything else a client or node needs (the network parameters: epoch length, genesis, rates,
geometry) is fetched from the authorities and taken from the *threshold-signed consensus*,
never from built-in defaults (see :func:`mixcore.net.directory_client.fetch_network`). The line
is what must reach the newcomer intact (from its operator, a web page, a friend): an attacker
who can swap it can swap the whole network, as with any trust anchor. The keys in it are what
authenticates the rest; the URLs only say where to ask.

Text form, one line, no spaces (safe to paste into a shell in single quotes)::

    mixnet-bootstrap1:THRESHOLD:KEYHEX@URL,KEYHEX@URL,...

A file may hold that line, or a JSON object ``{"version": 1, "threshold": T, "authorities":
[{"identity_key": HEX, "url": URL}, ...]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mixcore.consensus import AuthorityRef, AuthoritySet
from mixcore.errors import MixnetError, ParamsError

PREFIX = "mixnet-bootstrap1:"
#: Longest bootstrap text or file read (32 authorities with long URLs fit easily).
MAX_BOOTSTRAP_BYTES = 16384


class BootstrapError(MixnetError):
    """A bootstrap line or file that cannot be used (the message says why and what is expected)."""


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """The authorities of one network and the number of signatures a document needs."""

    authorities: tuple[AuthorityRef, ...]
    threshold: int

    def __post_init__(self) -> None:
        try:
            self.authority_set  # noqa: B018  # validates keys and threshold
        except ParamsError as exc:
            raise BootstrapError(f"bootstrap: {exc}") from None
        for ref in self.authorities:
            if "," in ref.url or any(c.isspace() for c in ref.url):
                raise BootstrapError(f"bootstrap: an authority URL may not hold ',' or spaces:"
                                     f" {ref.url!r}")

    @property
    def authority_set(self) -> AuthoritySet:
        return AuthoritySet(tuple(a.identity_key for a in self.authorities), self.threshold)

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(a.url for a in self.authorities)

    def to_text(self) -> str:
        refs = ",".join(f"{a.identity_key.hex()}@{a.url}" for a in self.authorities)
        return f"{PREFIX}{self.threshold}:{refs}"

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "threshold": self.threshold,
                "authorities": [a.to_json() for a in self.authorities]}

    @classmethod
    def parse(cls, text: str) -> Bootstrap:
        """From the one-line text form; :class:`BootstrapError` names what is wrong."""
        text = text.strip()
        if not text.startswith(PREFIX):
            raise BootstrapError(f"a bootstrap line starts with {PREFIX!r}")
        threshold_text, sep, refs_text = text[len(PREFIX):].partition(":")
        if not sep or not threshold_text.isdigit():
            raise BootstrapError(f"expected {PREFIX}THRESHOLD:KEYHEX@URL,KEYHEX@URL,...")
        refs = []
        for part in refs_text.split(","):
            try:
                refs.append(AuthorityRef.parse(part))
            except ValueError as exc:
                raise BootstrapError(f"bootstrap authority {part[:80]!r}: {exc}") from None
        return cls(tuple(refs), int(threshold_text))

    @classmethod
    def from_json(cls, data: Any) -> Bootstrap:
        try:
            if data.get("version") != 1:
                raise BootstrapError("bootstrap file: unknown version (expected 1)")
            refs = tuple(AuthorityRef.from_json(a) for a in data["authorities"])
            threshold = data["threshold"]
            if isinstance(threshold, bool) or not isinstance(threshold, int):
                raise BootstrapError("bootstrap file: threshold must be an integer")
        except BootstrapError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BootstrapError(f"bootstrap file: malformed ({exc})") from None
        return cls(refs, threshold)

    @classmethod
    def from_file_bytes(cls, raw: bytes, name: str) -> Bootstrap:
        """A bootstrap file's contents (a line, or the JSON object); ``name`` says which file
        in errors. The file is read by :func:`mixcore.loading.load_bootstrap`."""
        if len(raw) > MAX_BOOTSTRAP_BYTES:
            raise BootstrapError(f"bootstrap file {name} is over {MAX_BOOTSTRAP_BYTES} bytes")
        text = raw.decode("utf-8", errors="replace").strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise BootstrapError(f"bootstrap file {name}: not JSON ({exc})") from None
            return cls.from_json(data)
        return cls.parse(text)

"""An authority's configuration: a JSON file written by ``mixnet directory init``.

Paths inside the file (identity key, data directory) are relative to the file's own folder, so
an authority's folder can be moved as a whole. Every problem is a
:class:`~directory.errors.DirectoryConfigError` naming the field, one line, no traceback.

Example::

    {"version": 1, "name": "auth1", "identity_key_file": "identity.key",
     "listen": "127.0.0.1:8001", "url": "http://127.0.0.1:8001", "data_dir": ".",
     "params": {...NetworkParams...}, "threshold": null,
     "peers": [{"name": "auth2", "identity_key": "<64 hex>", "url": "http://127.0.0.1:8002"}],
     "schedule": {"vote_lead": 0.5, "consensus_lead": 0.3, "bootstrap_delay": 0.1,
                  "poll_interval": 0.5},
     "max_nodes": 1024, "keep_documents": 168,
     "admission": {"mode": "approved", "per_source": 4, "per_epoch": 64, "max_strangers": 0},
     "approvals_file": "approved.json",
     "limits": {"body_timeout": 5.0, "max_requests": 512, "max_requests_per_source": 32,
                "peer_reserve": 32, "keep_alive_timeout": 5.0}}
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from directory.admission import AdmissionSettings
from directory.approvals import APPROVALS_FILE_NAME
from directory.errors import DirectoryConfigError
from directory.limits import HttpLimits
from directory.voting import VotingSchedule
from mixcore.consensus import MAX_AUTHORITIES, MAX_NODES, AuthoritySet
from mixcore.errors import ParamsError
from mixcore.files import private_dir, write_atomic
from mixcore.keys import PUBLIC_KEY_LEN
from mixcore.params import NetworkParams

CONFIG_VERSION = 1
CONFIG_FILE_NAME = "authority.json"
IDENTITY_FILE_NAME = "identity.key"
DATABASE_FILE_NAME = "directory.sqlite3"
MAX_AUTHORITY_NAME_LEN = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")


def check_authority_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DirectoryConfigError(
            f"{what}: 1 to {MAX_AUTHORITY_NAME_LEN} characters of A-Z a-z 0-9 _ . - "
            "(starting with a letter or digit)"
        )
    return name


def check_url(url: Any, what: str = "url") -> str:
    """An http(s) base URL without query or fragment; a trailing slash is removed."""
    if not isinstance(url, str):
        raise DirectoryConfigError(f"{what}: expected text")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DirectoryConfigError(f"{what}: expected an http:// or https:// URL, got {url!r}")
    if parts.query or parts.fragment:
        raise DirectoryConfigError(f"{what}: must not have a query or fragment")
    try:
        parts.port  # noqa: B018  # raises on a malformed port
    except ValueError:
        raise DirectoryConfigError(f"{what}: malformed port in {url!r}") from None
    return url.rstrip("/")


def parse_listen(value: Any) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) to a pair."""
    if not isinstance(value, str) or ":" not in value:
        raise DirectoryConfigError(f"listen: expected HOST:PORT, got {value!r}")
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DirectoryConfigError(
            f"listen: expected HOST:PORT with a port 1..65535, got {value!r}"
        )
    return host, int(port_text)


def format_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """Another authority: its name, identity key and base URL."""

    name: str
    identity_key: bytes
    url: str

    def __post_init__(self) -> None:
        check_authority_name(self.name, "peer name")
        if not isinstance(self.identity_key, bytes) or len(self.identity_key) != PUBLIC_KEY_LEN:
            raise DirectoryConfigError(
                f"peer {self.name}: identity_key must be {PUBLIC_KEY_LEN} bytes"
            )
        object.__setattr__(self, "url", check_url(self.url, f"peer {self.name} url"))

    @classmethod
    def parse(cls, spec: str) -> PeerConfig:
        """``NAME=KEYHEX@URL``, as given on the command line."""
        name, eq, rest = spec.partition("=")
        key_hex, at, url = rest.partition("@")
        if not eq or not at:
            raise DirectoryConfigError(f"peer: expected NAME=KEYHEX@URL, got {spec!r}")
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            raise DirectoryConfigError(f"peer {name}: identity key is not hex") from None
        return cls(name=name, identity_key=key, url=url)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "identity_key": self.identity_key.hex(), "url": self.url}

    @classmethod
    def from_dict(cls, data: Any) -> PeerConfig:
        if not isinstance(data, dict) or set(data) != {"name", "identity_key", "url"}:
            raise DirectoryConfigError("peers: each entry needs exactly name, identity_key, url")
        try:
            key = bytes.fromhex(data["identity_key"])
        except (TypeError, ValueError):
            raise DirectoryConfigError(f"peer {data['name']!r}: identity_key is not hex") from None
        return cls(name=data["name"], identity_key=key, url=data["url"])


@dataclass(frozen=True, slots=True)
class AuthorityConfig:
    """Everything ``mixnet directory serve`` needs; paths are absolute once loaded."""

    name: str
    identity_key_file: Path
    listen_host: str
    listen_port: int
    url: str
    data_dir: Path
    params: NetworkParams = field(default_factory=NetworkParams)
    peers: tuple[PeerConfig, ...] = ()
    threshold: int | None = None
    """None means the majority of all authorities, ``n // 2 + 1``."""
    schedule: VotingSchedule = field(default_factory=VotingSchedule)
    max_nodes: int = MAX_NODES
    keep_documents: int = 168
    """Published documents (and own signatures) kept, in epochs."""
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    approvals_file: Path | None = None
    """The operator's approved node keys (None: ``approved.json`` in ``data_dir``)."""
    limits: HttpLimits = field(default_factory=HttpLimits)

    def __post_init__(self) -> None:
        check_authority_name(self.name)
        object.__setattr__(self, "url", check_url(self.url))
        names = [self.name, *(p.name for p in self.peers)]
        if len(set(names)) != len(names):
            raise DirectoryConfigError("peers: two authorities share a name")
        keys = [p.identity_key for p in self.peers]
        if len(set(keys)) != len(keys):
            raise DirectoryConfigError("peers: two peers share an identity key")
        if len(self.peers) + 1 > MAX_AUTHORITIES:
            raise DirectoryConfigError(f"peers: at most {MAX_AUTHORITIES} authorities in all")
        n = len(self.peers) + 1
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not n // 2 < t <= n):
            raise DirectoryConfigError(
                f"threshold: must be a majority of the {n} authorities "
                f"({n // 2 + 1}..{n}), got {t!r}"
            )
        if isinstance(self.max_nodes, bool) or not 1 <= self.max_nodes <= MAX_NODES:
            raise DirectoryConfigError(f"max_nodes: must be between 1 and {MAX_NODES}")
        if isinstance(self.keep_documents, bool) or not 2 <= self.keep_documents <= 100_000:
            raise DirectoryConfigError("keep_documents: must be between 2 and 100000 epochs")

    @property
    def effective_threshold(self) -> int:
        n = len(self.peers) + 1
        return self.threshold if self.threshold is not None else n // 2 + 1

    def authority_set(self, own_key: bytes) -> AuthoritySet:
        """This authority and its peers, with the configured threshold."""
        if own_key in {p.identity_key for p in self.peers}:
            raise DirectoryConfigError("peers: a peer has this authority's own identity key")
        keys = (own_key, *(p.identity_key for p in self.peers))
        try:
            return AuthoritySet(keys=keys, threshold=self.effective_threshold)
        except ParamsError as exc:
            raise DirectoryConfigError(str(exc)) from None

    @property
    def database_path(self) -> Path:
        return self.data_dir / DATABASE_FILE_NAME

    @property
    def approvals_path(self) -> Path:
        return self.approvals_file or self.data_dir / APPROVALS_FILE_NAME

    def with_peer(self, peer: PeerConfig) -> AuthorityConfig:
        """A copy with ``peer`` added, or replacing the peer of the same name."""
        peers = (*(p for p in self.peers if p.name != peer.name), peer)
        return _replace(self, peers=peers)

    def to_dict(self, base: Path) -> dict[str, Any]:
        return {
            "version": CONFIG_VERSION,
            "name": self.name,
            "identity_key_file": _relative(self.identity_key_file, base),
            "listen": format_listen(self.listen_host, self.listen_port),
            "url": self.url,
            "data_dir": _relative(self.data_dir, base),
            "params": self.params.to_dict(),
            "peers": [p.to_dict() for p in self.peers],
            "threshold": self.threshold,
            "schedule": self.schedule.to_dict(),
            "max_nodes": self.max_nodes,
            "keep_documents": self.keep_documents,
            "admission": self.admission.to_dict(),
            "approvals_file": _relative(self.approvals_path, base),
            "limits": self.limits.to_dict(),
        }


def _replace(config: AuthorityConfig, **changes: Any) -> AuthorityConfig:
    values = {name: getattr(config, name) for name in AuthorityConfig.__dataclass_fields__}
    values.update(changes)
    return AuthorityConfig(**values)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


_KNOWN = {
    "version",
    "name",
    "identity_key_file",
    "listen",
    "url",
    "data_dir",
    "params",
    "peers",
    "threshold",
    "schedule",
    "max_nodes",
    "keep_documents",
    "admission",
    "approvals_file",
    "limits",
}


def config_from_dict(data: Any, base: Path) -> AuthorityConfig:
    """Build a config from parsed JSON; relative paths are resolved against ``base``."""
    if not isinstance(data, dict):
        raise DirectoryConfigError("config: expected a JSON object")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise DirectoryConfigError(f"{unknown[0]}: unknown setting")
    if data.get("version") != CONFIG_VERSION:
        raise DirectoryConfigError(f"version: expected {CONFIG_VERSION}")
    for required in ("name", "listen", "url"):
        if required not in data:
            raise DirectoryConfigError(f"{required}: missing")
    host, port = parse_listen(data["listen"])
    try:
        params = NetworkParams.from_dict(data.get("params", {}))
        schedule = VotingSchedule(**data.get("schedule", {}))
    except ParamsError as exc:
        raise DirectoryConfigError(str(exc)) from None
    except TypeError:
        raise DirectoryConfigError("schedule: unknown or malformed setting") from None
    admission = _section(AdmissionSettings, data.get("admission", {}), "admission")
    limits = _section(HttpLimits, data.get("limits", {}), "limits")
    approvals_file = data.get("approvals_file")
    if approvals_file is not None and not isinstance(approvals_file, str):
        raise DirectoryConfigError("approvals_file: expected a path")
    peers_raw = data.get("peers", [])
    if not isinstance(peers_raw, list):
        raise DirectoryConfigError("peers: expected a list")
    key_file = data.get("identity_key_file", IDENTITY_FILE_NAME)
    data_dir = data.get("data_dir", ".")
    if not isinstance(key_file, str) or not isinstance(data_dir, str):
        raise DirectoryConfigError("identity_key_file and data_dir: expected paths")
    return AuthorityConfig(
        name=data["name"],
        identity_key_file=(base / key_file).resolve(),
        listen_host=host,
        listen_port=port,
        url=data["url"],
        data_dir=(base / data_dir).resolve(),
        params=params,
        peers=tuple(PeerConfig.from_dict(p) for p in peers_raw),
        threshold=data.get("threshold"),
        schedule=schedule,
        max_nodes=data.get("max_nodes", MAX_NODES),
        keep_documents=data.get("keep_documents", 168),
        admission=admission,
        approvals_file=(base / approvals_file).resolve() if approvals_file else None,
        limits=limits,
    )


def _section(cls: Any, raw: Any, what: str) -> Any:
    """A settings dataclass from a JSON object; every problem names the section."""
    if not isinstance(raw, dict):
        raise DirectoryConfigError(f"{what}: expected a JSON object")
    try:
        return cls(**raw)
    except TypeError:
        raise DirectoryConfigError(f"{what}: unknown or malformed setting") from None
    except ValueError as exc:
        raise DirectoryConfigError(str(exc) if what in str(exc) else f"{what}: {exc}") from None


def load_config(path: str | os.PathLike[str]) -> AuthorityConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DirectoryConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise DirectoryConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DirectoryConfigError(f"config file {path} is not valid JSON: {exc}") from None
    return config_from_dict(data, path.parent.resolve())


def save_config(path: str | os.PathLike[str], config: AuthorityConfig) -> None:
    """Write atomically, owner-only: it names the peers and where the authority keeps its
    data, which is nobody else's business on a shared host."""
    path = Path(path)
    private_dir(path.parent)
    body = json.dumps(config.to_dict(path.parent.resolve()), indent=2) + "\n"
    write_atomic(path, body.encode(), mode=0o600)

"""Creating and configuring an authority: its key and config, its peers, its approved nodes.

These are what ``mixnet directory init|add-peer|info|approve|revoke`` run, and what the testnet
harness calls directly: each returns a typed, frozen answer (:class:`AuthorityInfo`,
:class:`ApprovalsInfo`), which the commands print (``to_dict`` is their ``--json`` object).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from directory.admission import AdmissionMode, AdmissionSettings, Approval
from directory.approvals import load_approvals, save_approvals
from directory.config import (
    CONFIG_FILE_NAME,
    IDENTITY_FILE_NAME,
    AuthorityConfig,
    PeerConfig,
    load_config,
    save_config,
)
from directory.errors import DirectoryConfigError
from mixcore.bootstrap import Bootstrap
from mixcore.consensus import AuthorityRef
from mixcore.keys import IdentityKey, load_identity_key, save_identity_key
from mixcore.params import NetworkParams


def bootstrap_of(config: AuthorityConfig, identity: IdentityKey) -> Bootstrap:
    """The network as this authority knows it: itself and its peers, and the threshold."""
    refs = [AuthorityRef(config.url, identity.public)]
    refs += [AuthorityRef(peer.url, peer.identity_key) for peer in config.peers]
    return Bootstrap(tuple(refs), config.effective_threshold)


@dataclass(frozen=True, slots=True)
class AuthorityInfo:
    """What an authority is: its name, key and URL, where its config lies, its peers, and the
    bootstrap line of the network as it knows it."""

    name: str
    identity_key: bytes
    url: str
    listen: str
    config: Path
    threshold: int
    peers: tuple[PeerConfig, ...]
    bootstrap: str

    @property
    def peer_spec(self) -> str:
        """``NAME=KEYHEX@URL``: how the other authorities name this one (``--peer``)."""
        return f"{self.name}={self.identity_key.hex()}@{self.url}"

    @property
    def ref(self) -> AuthorityRef:
        return AuthorityRef(self.url, self.identity_key)

    @property
    def peer(self) -> PeerConfig:
        return PeerConfig(self.name, self.identity_key, self.url)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``mixnet directory init|add-peer|info --json`` prints."""
        return {
            "name": self.name,
            "identity_key": self.identity_key.hex(),
            "url": self.url,
            "listen": self.listen,
            "config": str(self.config),
            "threshold": self.threshold,
            "authorities": len(self.peers) + 1,
            "peers": [p.to_dict() for p in self.peers],
            "peer_spec": self.peer_spec,
            "bootstrap": self.bootstrap,
        }

    @classmethod
    def of(cls, config: AuthorityConfig, identity: IdentityKey, config_path: Path) -> AuthorityInfo:
        return cls(
            name=config.name,
            identity_key=identity.public,
            url=config.url,
            listen=f"{config.listen_host}:{config.listen_port}",
            config=config_path.resolve(),
            threshold=config.effective_threshold,
            peers=config.peers,
            bootstrap=bootstrap_of(config, identity).to_text(),
        )


@dataclass(frozen=True, slots=True)
class ApprovalsInfo:
    """An authority's approved nodes after ``approve`` or ``revoke``."""

    name: str
    admission: str
    approvals_file: Path
    what: str
    """``approved`` or ``revoked``."""
    changed: tuple[bytes, ...]
    approved_nodes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "admission": self.admission,
            "approvals_file": str(self.approvals_file),
            self.what: [key.hex() for key in self.changed],
            "approved_nodes": self.approved_nodes,
        }


def init_authority(
    directory: Path,
    *,
    name: str,
    listen_host: str,
    listen_port: int,
    url: str | None = None,
    params: NetworkParams | None = None,
    peers: Sequence[PeerConfig] = (),
    threshold: int | None = None,
    open_admission: bool = False,
) -> AuthorityInfo:
    """Write a new authority's identity key (0600) and ``authority.json`` in ``directory``;
    refuses to overwrite one. ``url`` defaults to ``http://HOST:PORT``, ``params`` to the
    built-in defaults."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE_NAME
    key_path = directory / IDENTITY_FILE_NAME
    if config_path.exists() or key_path.exists():
        raise DirectoryConfigError(f"{directory} already holds an authority; refusing to overwrite")
    host = listen_host if ":" not in listen_host else f"[{listen_host}]"
    config = AuthorityConfig(
        name=name,
        identity_key_file=key_path.resolve(),
        listen_host=listen_host,
        listen_port=listen_port,
        url=url or f"http://{host}:{listen_port}",
        data_dir=directory.resolve(),
        params=params if params is not None else NetworkParams(),
        peers=tuple(peers),
        threshold=threshold,
        admission=AdmissionSettings(
            AdmissionMode.OPEN if open_admission else AdmissionMode.APPROVED
        ),
    )
    identity = IdentityKey.generate()
    config.authority_set(identity.public)  # checks the threshold against the peers
    directory.mkdir(parents=True, exist_ok=True)
    save_identity_key(key_path, identity)
    save_config(config_path, config)
    return AuthorityInfo.of(config, identity, config_path)


def authority_info(config_path: Path) -> AuthorityInfo:
    """The authority whose config is ``config_path``, as ``mixnet directory info`` shows it."""
    config = load_config(config_path)
    return AuthorityInfo.of(config, load_identity_key(config.identity_key_file), config_path)


def add_peers(
    config_path: Path, peers: Iterable[PeerConfig], threshold: int | None = None
) -> AuthorityInfo:
    """Add (or update, by name) peer authorities; ``threshold`` replaces the configured one."""
    config = load_config(config_path)
    identity = load_identity_key(config.identity_key_file)
    for peer in peers:
        config = config.with_peer(peer)
    if threshold is not None:
        values = {n: getattr(config, n) for n in AuthorityConfig.__dataclass_fields__}
        values["threshold"] = threshold
        config = AuthorityConfig(**values)
    config.authority_set(identity.public)
    save_config(config_path, config)
    return AuthorityInfo.of(config, identity, config_path)


def approve_nodes(config_path: Path, new: Iterable[Approval]) -> ApprovalsInfo:
    """Approve node keys (a running authority picks the change up without a restart)."""
    config = load_config(config_path)
    approvals = {a.identity_key: a for a in load_approvals(config.approvals_path)}
    added = list(new)
    if not added:
        raise DirectoryConfigError("approve: give a KEY with --role, or --file LIST")
    for approval in added:
        approvals[approval.identity_key] = approval
    save_approvals(config.approvals_path, approvals.values())
    return _approvals_info(config, len(approvals), [a.identity_key for a in added], "approved")


def revoke_node(config_path: Path, key: bytes) -> ApprovalsInfo:
    """Withdraw one node's approval."""
    config = load_config(config_path)
    approvals = [a for a in load_approvals(config.approvals_path) if a.identity_key != key]
    save_approvals(config.approvals_path, approvals)
    return _approvals_info(config, len(approvals), [key], "revoked")


def _approvals_info(
    config: AuthorityConfig, total: int, changed: list[bytes], what: str
) -> ApprovalsInfo:
    return ApprovalsInfo(config.name, config.admission.mode.value, config.approvals_path, what,
                         tuple(changed), total)

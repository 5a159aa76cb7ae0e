"""Creating a mix node or provider: its keys and its config, in one call.

:func:`init_node` is what ``mixnet mixnode init`` runs (after it has resolved the network from
``--join`` or ``--authority``/``--params``) and what the testnet harness calls directly: both
get a :class:`NodeInfo` back, and the command prints :meth:`NodeInfo.to_dict`. Settings that a
launcher needs beyond the command's (the address in the descriptor, a looser registration
limit on a network whose clients share one address) are arguments here, written into the
config once, never edited into it afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixcore.consensus import AuthorityRef
from mixcore.keys import IdentityKey, LinkKey, save_identity_key, save_link_key
from mixcore.params import NetworkParams
from mixcore.topology import NodeRole
from mixnode.config import CONFIG_NAME, ConfigError, NodeConfig
from mixnode.server import IDENTITY_FILE, LINK_FILE


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a new node is: where its config lies, its name, role and public keys."""

    config: Path
    name: str
    role: NodeRole
    identity_key: bytes
    link_key: bytes

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``mixnet mixnode init --json`` prints."""
        return {
            "config": str(self.config),
            "name": self.name,
            "role": self.role.value,
            "identity_key": self.identity_key.hex(),
            "link_key": self.link_key.hex(),
        }


def init_node(
    data_dir: Path,
    *,
    role: NodeRole,
    listen_host: str,
    listen_port: int,
    authorities: tuple[AuthorityRef, ...],
    threshold: int,
    params: NetworkParams,
    name: str = "",
    workers: int | None = None,
    public_host: str = "",
    registrations_per_source: int | None = None,
    force: bool = False,
) -> NodeInfo:
    """Write a new node's identity key, link key and config (``node.json``) in ``data_dir``.

    ``name`` defaults to the folder's name; ``public_host`` is the host in its descriptor
    (default: ``listen_host``); ``registrations_per_source`` overrides the config's default.
    An existing config is refused unless ``force``."""
    data = Path(data_dir).resolve()
    if (data / CONFIG_NAME).exists() and not force:
        raise ConfigError(f"{data / CONFIG_NAME} exists; use --force to overwrite")
    extra: dict[str, Any] = {}
    if registrations_per_source is not None:
        extra["registrations_per_source"] = registrations_per_source
    config = NodeConfig(
        name=name or data.name[:32],
        role=role,
        data_dir=data,
        listen_host=listen_host,
        listen_port=listen_port,
        authorities=authorities,
        threshold=threshold,
        params=params,
        workers=workers,
        public_host=public_host,
        **extra,
    )
    data.mkdir(parents=True, exist_ok=True)
    identity, link = IdentityKey.generate(), LinkKey.generate()
    save_identity_key(data / IDENTITY_FILE, identity)
    save_link_key(data / LINK_FILE, link)
    config.save(data / CONFIG_NAME)
    return NodeInfo(data / CONFIG_NAME, config.name, config.role, identity.public, link.public)

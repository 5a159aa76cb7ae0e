"""Shared helpers of the directory tests: nodes that sign descriptors, authority configs."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from directory.admission import AdmissionMode, AdmissionSettings
from directory.config import AuthorityConfig, PeerConfig, save_config
from directory.voting import VotingSchedule
from mixcore.descriptor import NodeDescriptor, sign_descriptor
from mixcore.keys import IdentityKey, LinkKey, save_identity_key
from mixcore.params import NetworkParams
from mixcore.sphinx import MixPrivateKey
from mixcore.topology import NodeRole

#: Open admission without caps that matter: for tests of the other rules, whose fake nodes no
#: operator approved (tests/directory/test_admission.py tests admission itself).
OPEN_ADMISSION = AdmissionSettings(
    mode=AdmissionMode.OPEN, per_source=1024, per_epoch=1024, max_strangers=1024
)


class FakeNode:
    """A mix or provider as the directory sees it: keys, and descriptors signed on demand."""

    def __init__(self, index: int, role: NodeRole = NodeRole.MIX) -> None:
        self.index = index
        self.role = role
        self.identity = IdentityKey.generate()
        self.link_key = LinkKey.generate().public
        self._mix_keys: dict[int, bytes] = {}

    def mix_key(self, epoch: int) -> bytes:
        if epoch not in self._mix_keys:
            self._mix_keys[epoch] = MixPrivateKey.generate().public
        return self._mix_keys[epoch]

    def descriptor(self, epoch: int, **changes: Any) -> NodeDescriptor:
        fields: dict[str, Any] = {
            "identity_key": self.identity.public,
            "link_key": self.link_key,
            "role": self.role,
            "layer": 0,
            "host": "127.0.0.1",
            "port": 20000 + self.index,
            "epoch": epoch,
            "mix_keys": ((epoch, self.mix_key(epoch)), (epoch + 1, self.mix_key(epoch + 1))),
            "name": f"node{self.index}",
        }
        fields.update(changes)
        return NodeDescriptor(**fields)

    def signed(self, epoch: int, **changes: Any) -> bytes:
        return sign_descriptor(self.descriptor(epoch, **changes), self.identity)


@pytest.fixture
def make_nodes() -> Callable[..., list[FakeNode]]:
    """``make_nodes(mixes, providers)``: providers first, then mixes."""

    def make(mixes: int = 3, providers: int = 1) -> list[FakeNode]:
        nodes = [FakeNode(i, NodeRole.PROVIDER) for i in range(providers)]
        nodes += [FakeNode(providers + i, NodeRole.MIX) for i in range(mixes)]
        return nodes

    return make


def free_port() -> int:
    """A loopback port that is free now, below the usual ephemeral range (32768+), so that the
    outgoing connections of whatever else runs on this machine are unlikely to take it."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def write_authorities(
    base: Path,
    count: int,
    params: NetworkParams,
    *,
    schedule: VotingSchedule | None = None,
    threshold: int | None = None,
    admission: AdmissionSettings = OPEN_ADMISSION,
    **settings: Any,
) -> list[tuple[Path, AuthorityConfig, IdentityKey]]:
    """Configs for ``count`` authorities on free loopback ports, each knowing all the others."""
    identities = [IdentityKey.generate() for _ in range(count)]
    ports = [free_port() for _ in range(count)]
    names = [f"auth{i + 1}" for i in range(count)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    result = []
    for i in range(count):
        folder = base / names[i]
        folder.mkdir(parents=True)
        key_file = folder / "identity.key"
        save_identity_key(key_file, identities[i])
        peers = tuple(
            PeerConfig(names[j], identities[j].public, urls[j]) for j in range(count) if j != i
        )
        config = AuthorityConfig(
            name=names[i],
            identity_key_file=key_file,
            listen_host="127.0.0.1",
            listen_port=ports[i],
            url=urls[i],
            data_dir=folder,
            params=params,
            peers=peers,
            threshold=threshold,
            schedule=schedule or VotingSchedule(poll_interval=0.1),
            admission=admission,
            **settings,
        )
        path = folder / "authority.json"
        save_config(path, config)
        result.append((path, config, identities[i]))
    return result


@pytest.fixture
def authority_files(
    tmp_path: Path,
) -> Callable[..., list[tuple[Path, AuthorityConfig, IdentityKey]]]:
    def make(count: int, params: NetworkParams, **kwargs: Any) -> list[Any]:
        return write_authorities(tmp_path, count, params, **kwargs)

    return make


def params_file(path: Path, params: NetworkParams) -> Path:
    path.write_text(json.dumps(params.to_dict()))
    return path

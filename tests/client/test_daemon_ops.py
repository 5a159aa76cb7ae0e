"""The daemon's side of the registry, on a real transport-only client (made by ``mixnet
client init`` without a passphrase, daemon object built but never started): every request
waits for a consensus first, and the messenger's operations say how to get a message store.
(Async only because the daemon reads trio's clock.)"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client import daemon_ops
from client.daemon import ClientDaemon
from client.daemon_config import DaemonConfig
from client.errors import ClientError
from mixcore.params import NetworkParams
from mixnet.cli import main
from mixnet.network import free_port


@pytest.fixture
async def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ClientDaemon]:
    monkeypatch.delenv("MIXNET_PASSPHRASE", raising=False)
    params = NetworkParams(epoch_length=60.0, genesis_time=float(int(time.time())))
    (tmp_path / "params.json").write_text(json.dumps(params.to_dict()))
    data = tmp_path / "c"
    assert main(["client", "init", "--dir", str(data), "--provider", "provider1",
                 "--params", str(tmp_path / "params.json"),
                 "--authority", f"{'ab' * 32}@http://127.0.0.1:{free_port()}"]) == 0
    d = ClientDaemon(DaemonConfig.load(data))
    yield d
    d.db.close()


async def test_no_consensus_first_then_no_store_says_what_to_do(daemon: ClientDaemon) -> None:
    for op in ("status", "contacts", "no-such-op"):
        with pytest.raises(ClientError, match="no consensus yet"):
            daemon.handle_request({"op": op})
    for op in sorted(daemon_ops.REGISTRY.names() - {"status", "address", "send", "message",
                                                     "inbox", "mark_read", "outbox"}):
        with pytest.raises(ClientError, match=r"no message store.*mixnet client init"):
            daemon_ops.REGISTRY.handle(daemon, {"op": op})
    assert daemon_ops.REGISTRY.handle(daemon, {"op": "outbox"}) == []
    with pytest.raises(ClientError, match="mark_read needs"):
        daemon_ops.REGISTRY.handle(daemon, {"op": "mark_read", "seqs": "1"})

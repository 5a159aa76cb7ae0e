"""The HTTP API in process (httpx's ASGI transport): uploads, bad input, documents, info."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from directory.admission import AdmissionMode, AdmissionSettings
from directory.app import create_app
from directory.authority import Authority
from directory.config import AuthorityConfig, PeerConfig
from directory.registry import MAX_UPLOAD_BYTES
from directory.store import DirectoryStore
from mixcore.consensus import AuthoritySet, verify_consensus
from mixcore.descriptor import DESCRIPTOR_SIGNING_DOMAIN
from mixcore.encoding import pack
from mixcore.keys import IdentityKey, save_identity_key
from mixcore.params import NetworkParams

LENGTH = 10.0
EPOCH = 7
PARAMS = NetworkParams(epoch_length=LENGTH, genesis_time=0.0, mean_hop_delay=0.1, layers=1)
#: These tests are about the other upload rules; test_admission.py tests admission.
OPEN_ADMISSION = AdmissionSettings(AdmissionMode.OPEN, per_source=100, per_epoch=100)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_authority(tmp_path: Path, clock: Clock, peers: tuple[PeerConfig, ...] = ()) -> Authority:
    identity = IdentityKey.generate()
    save_identity_key(tmp_path / "identity.key", identity)
    config = AuthorityConfig(
        name="solo",
        identity_key_file=tmp_path / "identity.key",
        listen_host="127.0.0.1",
        listen_port=1,
        url="http://127.0.0.1:1",
        data_dir=tmp_path,
        params=PARAMS,
        peers=peers,
        admission=OPEN_ADMISSION,
    )
    return Authority(config, identity, DirectoryStore(config.database_path), now=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock(EPOCH * LENGTH + 1.0)


@pytest.fixture
def authority(tmp_path: Path, clock: Clock) -> Authority:
    return make_authority(tmp_path, clock)


@pytest.fixture
async def client(authority: Authority) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(authority))
    async with httpx.AsyncClient(transport=transport, base_url="http://authority") as http:
        yield http


async def post(client: httpx.AsyncClient, data: bytes) -> httpx.Response:
    return await client.post(
        "/v1/descriptor", content=data, headers={"content-type": "application/octet-stream"}
    )


def one_line(response: httpx.Response) -> str:
    text = response.text.strip()
    assert "\n" not in text and text
    assert "Traceback" not in text
    return text


async def test_upload_accepts_and_is_idempotent(client, make_nodes) -> None:
    node = make_nodes(1, 0)[0]
    first = await post(client, node.signed(EPOCH))
    assert first.status_code == 200 and one_line(first).startswith("accepted")
    again = await post(client, node.signed(EPOCH))
    assert again.status_code == 200 and one_line(again).startswith("already held")
    assert (await post(client, node.signed(EPOCH + 1))).status_code == 200


async def test_forged_signature_is_rejected(client, make_nodes) -> None:
    node = make_nodes(1, 0)[0]
    body = node.descriptor(EPOCH).encode()
    forged = pack([body, IdentityKey.generate().sign(DESCRIPTOR_SIGNING_DOMAIN + body)])
    response = await post(client, forged)
    assert response.status_code == 403
    assert "signature" in one_line(response)


async def test_replayed_old_descriptor_is_rejected(client, make_nodes) -> None:
    node = make_nodes(1, 0)[0]
    response = await post(client, node.signed(EPOCH - 1))
    assert response.status_code == 400
    assert one_line(response).startswith("epoch:")


async def test_oversized_and_malformed_bodies(client) -> None:
    too_big = await post(client, b"\x00" * (MAX_UPLOAD_BYTES + 1))
    assert too_big.status_code == 413
    one_line(too_big)

    sent = 0

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while reading
        nonlocal sent
        for _ in range(1000):
            sent += 1
            yield b"\x00" * 1000

    streamed = await client.post("/v1/descriptor", content=chunks())
    assert streamed.status_code == 413
    assert sent <= MAX_UPLOAD_BYTES // 1000 + 2  # stopped reading at the limit
    for junk in (b"", b"\xff\xff", pack([b"x", b"y"]), b"\x92\xc4\x00\xc4\x00"):
        response = await post(client, junk)
        assert response.status_code == 400, junk
        one_line(response)


async def test_a_node_cannot_change_another_nodes_keys(client, make_nodes) -> None:
    victim, attacker = make_nodes(2, 0)
    assert (await post(client, victim.signed(EPOCH))).status_code == 200
    # The victim's identity with the attacker's link key, signed by the attacker.
    body = victim.descriptor(EPOCH + 1, link_key=attacker.link_key).encode()
    signed = pack([body, attacker.identity.sign(DESCRIPTOR_SIGNING_DOMAIN + body)])
    assert (await post(client, signed)).status_code == 403
    # The attacker's own identity listing the victim's link key.
    stolen = await post(client, attacker.signed(EPOCH, link_key=victim.link_key))
    assert stolen.status_code == 409
    assert "another node" in one_line(stolen)
    # The victim's own second, different descriptor for the same epoch.
    assert (await post(client, victim.signed(EPOCH, port=999))).status_code == 409


async def test_health_and_authority_info(client, authority: Authority) -> None:
    health = await client.get("/v1/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["current_epoch"] == EPOCH
    info = (await client.get("/v1/authority")).json()
    assert info["identity_key"] == authority.identity.public.hex()
    assert info["threshold"] == 1 and info["authorities"] == 1
    assert NetworkParams.from_dict(info["params"]) == PARAMS
    assert info["latest_published_epoch"] is None


async def test_documents_are_served_once_published(
    client, authority: Authority, clock: Clock, make_nodes
) -> None:
    assert (await client.get("/v1/consensus/current")).status_code == 404
    assert (await client.get(f"/v1/consensus/{EPOCH + 1}")).status_code == 404
    assert (await client.get("/v1/consensus/abc")).status_code == 400
    assert (await client.get("/v1/consensus/99999999999")).status_code == 400
    assert (await client.get(f"/v1/vote/{EPOCH + 1}")).status_code == 404
    nodes = make_nodes(1, 1)
    for node in nodes:
        assert (await post(client, node.signed(EPOCH))).status_code == 200
    # A lone authority with descriptors for the current epoch bootstraps it right away.
    for step in range(40):
        clock.now = EPOCH * LENGTH + 1.0 + step * 0.1
        authority.tick()
    current = await client.get("/v1/consensus/current")
    assert current.status_code == 200
    assert current.headers["content-type"] == "application/octet-stream"
    authorities = AuthoritySet.majority([authority.identity.public])
    verified = verify_consensus(current.content, authorities, expected_epoch=EPOCH)
    assert len(verified.document.nodes) == 2
    by_number = await client.get(f"/v1/consensus/{EPOCH}")
    assert by_number.content == current.content
    # The next epoch: vote at 0.5 epoch before it, document at 0.3 before.
    clock.now = (EPOCH + 1) * LENGTH - 0.3 * LENGTH
    authority.tick()
    assert (await client.get(f"/v1/vote/{EPOCH + 1}")).status_code == 200
    signature = await client.get(f"/v1/signature/{EPOCH + 1}")
    assert signature.status_code == 200
    nxt = await client.get(f"/v1/consensus/{EPOCH + 1}")
    verify_consensus(nxt.content, authorities, expected_epoch=EPOCH + 1)
    assert (await client.get("/v1/health")).json()["latest_published_epoch"] == EPOCH + 1


async def test_wrong_method_and_path(client) -> None:
    assert (await client.get("/v1/descriptor")).status_code == 405
    assert (await client.post("/v1/consensus/current")).status_code == 405
    assert (await client.get("/v2/health")).status_code == 404


async def test_restart_serves_the_same_bytes_and_remembers_descriptors(
    tmp_path: Path, clock: Clock, make_nodes
) -> None:
    first = make_authority(tmp_path, clock)
    node = make_nodes(1, 0)[0]
    first.submit_descriptor(node.signed(EPOCH))
    for step in range(40):
        clock.now = EPOCH * LENGTH + 1.0 + step * 0.1
        first.tick()
    document = first.document(EPOCH)
    signature = first.signature(EPOCH)
    assert document is not None and signature is not None
    first.store.close()

    identity = first.identity
    again = Authority(first.config, identity, DirectoryStore(first.config.database_path), now=clock)
    assert again.document(EPOCH) == document
    again.tick()
    assert again.document(EPOCH) == document
    assert again.signature(EPOCH) == signature
    assert again.registry.descriptors_for(EPOCH) == [node.signed(EPOCH)]
    assert again.submit_descriptor(node.signed(EPOCH)).duplicate

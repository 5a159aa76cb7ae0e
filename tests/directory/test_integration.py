"""Done-when: three authorities as real processes on loopback, with short epochs.

Nodes (this test) upload descriptors to all three; all three publish identical documents signed
by all of them for consecutive epochs; one authority is stopped and the other two still publish
the next epoch's document with 2 of 3 signatures, which clients fetch through the survivors;
the stopped authority is restarted mid-epoch, serves the very bytes it served before, catches
up on the current epoch and rejoins (its signature is on the next document it votes on).
About 20-30 s on an idle machine; the epoch arithmetic adapts to a loaded machine: every step
is computed from the clock at the time it happens (an upload refused because the epoch moved on
is redone for the new epoch), and waits for documents end as soon as they are there. The epoch
itself is sized from a step measured at the start (:func:`epoch_length_for_this_machine`): on
a loaded machine an upload round to three authorities once took three 4-second epochs, and the
authorities' votes (due a fraction of an epoch before it starts) need room as well.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from helpers import HANG, wait_for

from directory.voting import VotingSchedule
from mixcore.consensus import AuthoritySet, split_signed_document, verify_consensus
from mixcore.epochs import EpochClock
from mixcore.net.directory_client import ConsensusFetcher, UploadOutcome, upload_descriptor
from mixcore.params import NetworkParams

MIN_EPOCH_LENGTH, MAX_EPOCH_LENGTH = 4.0, 60.0
#: Epochs last this many measured steps (an authority's start-up), within the bounds above.
STEPS_PER_EPOCH = 6.0


def epoch_length_for_this_machine() -> float:
    """Epoch length from how long this machine takes right now to start an authority's
    interpreter and imports (``directory --help``): a loaded machine gets longer epochs, so no
    step of the test (a round of uploads, a vote) has to fit in a fixed slice of wall time."""
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "mixnet.cli", "directory", "--help"],
                   check=True, capture_output=True)
    step = time.monotonic() - began
    return min(MAX_EPOCH_LENGTH, max(MIN_EPOCH_LENGTH, STEPS_PER_EPOCH * step))
SCHEDULE = VotingSchedule(
    vote_lead=0.3, consensus_lead=0.15, bootstrap_delay=0.1, poll_interval=0.1
)


class Processes:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, config: Path) -> None:
        log = (self.base / f"{name}.log").open("ab")
        self.running[name] = subprocess.Popen(
            [sys.executable, "-m", "mixnet.cli", "directory", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def stop(self, name: str) -> int:
        proc = self.running.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=HANG)  # a graceful stop; the timeout bounds a hang
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_healthy(url: str, procs: Processes, name: str, timeout: float = HANG) -> None:
    def healthy() -> bool:
        if procs.running[name].poll() is not None:
            log = (procs.base / f"{name}.log").read_text()
            raise AssertionError(f"{name} exited: {log[-2000:]}")
        return httpx.get(f"{url}/v1/health", timeout=HANG).status_code == 200

    wait_for(healthy, what=f"{url} to become healthy", timeout=timeout, interval=0.05,
             ignore=(httpx.HTTPError,))


def get_document(url: str, epoch: int) -> bytes | None:
    try:
        response = httpx.get(f"{url}/v1/consensus/{epoch}", timeout=2.0)
    except httpx.HTTPError:
        return None
    return response.content if response.status_code == 200 else None


def wait_documents(
    urls: list[str], epoch: int, authorities: AuthoritySet, signers: int,
    timeout: float = HANG,
) -> list[bytes]:
    """Poll until every URL serves a verifying document for ``epoch`` with ``signers`` sigs."""
    def published() -> list[bytes] | None:
        docs = [get_document(url, epoch) for url in urls]
        if all(
            d is not None
            and len(verify_consensus(d, authorities, expected_epoch=epoch).signers) >= signers
            for d in docs
        ):
            return [d for d in docs if d is not None]
        return None

    docs: list[bytes] = wait_for(
        published, what=f"epoch {epoch}: every authority publishing", timeout=timeout)
    return docs


def accepted(outcomes: list[UploadOutcome]) -> None:
    assert outcomes and all(o.accepted for o in outcomes), [
        (o.url, o.status, o.reason) for o in outcomes if not o.accepted
    ]


def wait_until(clock: EpochClock, when: float) -> None:
    """Until the wall clock reaches ``when`` (an epoch's start: the subject here is epochs, so
    this waits for a time the test computed, and decides nothing by its length)."""
    delay = when - time.time()
    if delay > 0:
        time.sleep(delay)


@pytest.mark.slow
def test_three_authorities_publish_survive_a_stop_and_rejoin(
    processes: Processes, authority_files, make_nodes
) -> None:
    # Genesis a little ahead: the authorities prepare the first document before it starts.
    length = epoch_length_for_this_machine()
    print(f"epoch length {length:.1f} s")  # shown by -rP or on failure
    params = NetworkParams(
        epoch_length=length, genesis_time=time.time() + 1.5, mean_hop_delay=0.05, layers=3
    )
    clock = EpochClock.from_params(params)
    written = authority_files(3, params, schedule=SCHEDULE)
    configs = {c.name: (path, c) for path, c, _ in written}
    urls = [c.url for _, c, _ in written]
    authorities = AuthoritySet.majority(identity.public for _, _, identity in written)
    for name, (path, _) in configs.items():
        processes.start(name, path)
    for name, (_, config) in configs.items():
        wait_healthy(config.url, processes, name)

    nodes = make_nodes(mixes=3, providers=2)

    async def upload_all(epoch: int, targets: list[str]) -> list[UploadOutcome]:
        signed = [node.signed(epoch) for node in nodes]
        results: list[UploadOutcome] = []

        async def one(wire: bytes) -> None:
            results.extend(await upload_descriptor(targets, wire, timeout=HANG))

        async with trio.open_nursery() as nursery:
            for wire in signed:
                nursery.start_soon(one, wire)
        return results

    def current() -> int:
        now = time.time()
        return -1 if now < params.genesis_time else clock.epoch_at(now)

    def register(reachable: list[str]) -> tuple[int, float]:
        """Upload every node's descriptors for the current epoch and the next, as a node does.

        On a loaded machine the epoch may move on between computing it and the upload's
        arrival (short epochs); then the authorities refuse the stale epoch and we simply try
        again with the new one. Returns the epoch registered and when the uploads were done.
        """
        if current() < 0:
            wait_until(clock, params.genesis_time)  # before genesis only epoch 0 is accepted
        for _ in range(10):
            epoch = current()
            outcomes = trio.run(upload_all, epoch, urls) + trio.run(upload_all, epoch + 1, urls)
            mine = [o for o in outcomes if o.url in reachable]
            if all(o.accepted for o in mine):
                assert all(o.status is None for o in outcomes if o.url not in reachable)
                return epoch, time.time()
            if not any(o.reason.startswith("epoch:") for o in mine if not o.accepted):
                accepted(mine)  # a real refusal: fail with the reasons
        raise AssertionError("could not register within ten tries")

    def first_full_vote(epoch: int, uploaded_at: float) -> int:
        """The first epoch whose vote was taken after the uploads: it lists every node."""
        full = epoch
        while clock.start(full) - SCHEDULE.vote_lead * length <= uploaded_at:
            full += 1
        return full

    def register_through(target: int, reachable: list[str]) -> int:
        """Register so that descriptors cover epochs up to ``target + 1``; returns the first
        epoch whose document lists every node."""
        epoch, uploaded_at = register(reachable)
        full = first_full_vote(epoch, uploaded_at)
        while epoch + 2 < max(full, target) + 1:  # the descriptors must cover full + 1
            wait_until(clock, clock.start(epoch + 1))
            epoch, _ = register(reachable)
        return full

    # Every authority publishes the same document, signed by all three, epoch after epoch.
    # (Earlier epochs may have been voted on before the uploads, or bootstrapped mid-upload.)
    full = register_through(0, urls)
    for epoch in (full, full + 1):
        docs = wait_documents(urls, epoch, authorities, signers=3)
        assert docs[0] == docs[1] == docs[2]
        verified = verify_consensus(docs[0], authorities, expected_epoch=epoch)
        assert len(verified.document.nodes) == 5
        assert verified.document.empty_layers() == ()

    async def fetch(epoch: int) -> int:
        fetcher = ConsensusFetcher(urls, authorities, clock, timeout=HANG)
        return (await fetcher.fetch(epoch)).epoch

    assert trio.run(fetch, full + 1) == full + 1
    last = full + 1
    served_before = get_document(urls[2], last)

    # One authority down: the other two publish with 2 of 3 signatures (auth3 is reported
    # unreachable for each upload), and clients fetch through the survivors.
    assert processes.stop("auth3") == 0
    survivors = register_through(last, urls[:2])
    docs = wait_documents(urls[:2], survivors, authorities, signers=2)
    assert docs[0] == docs[1]
    assert len(verify_consensus(docs[0], authorities).document.nodes) == 5
    assert trio.run(fetch, survivors) == survivors  # via the survivors, whatever the order

    # Restarted: serves the bytes it served before, catches up on the current epoch by adopting
    # the others' document, and signs again from the next vote on.
    processes.start("auth3", configs["auth3"][0])
    wait_healthy(urls[2], processes, "auth3")
    back = time.time()
    assert get_document(urls[2], last) == served_before
    now_epoch = clock.epoch_at(back)
    docs = wait_documents(urls, now_epoch, authorities, signers=2)
    assert len({split_signed_document(d)[0] for d in docs}) == 1
    rejoin = now_epoch + 1
    while clock.start(rejoin) - SCHEDULE.vote_lead * length <= back:
        rejoin += 1
    docs = wait_documents(urls, rejoin, authorities, signers=3)
    assert docs[0] == docs[1] == docs[2]

"""Offline is normal: a message sent while the link to our provider is down stays queued (no
attempt is spent into a dead link) and goes out in the first payload slot after the link is
back; an unacknowledged fragment is retried with a growing, randomized backoff until a *time*
budget counted from the message's creation runs out (so a restarted daemon that resumes the
message keeps its original budget); memory stays bounded however long it retries. All on the
core's virtual clock: hours in milliseconds."""

from __future__ import annotations

import itertools
import random

from client.actions import MessageDelivered, MessageUndeliverable, PacketKind, SendPacket
from client.config import ClientConfig
from client.core import ClientCore
from client.mailbox_seal import MailboxKey
from client.transport.arq import (
    ArqInput,
    FragmentState,
    MessageState,
    UndeliverableReason,
    next_state,
    retry_backoff,
)

MAILBOX = b"A" * 16
BOB = b"B" * 16
BOB_MAILBOX_KEY = MailboxKey.generate()
BOB_KEY = BOB_MAILBOX_KEY.public
HOUR = 3600.0


def make_core(kit, **config) -> ClientCore:
    """A core on a slow consensus (few timer events per virtual hour: the subject is the ARQ,
    not the streams)."""
    params = kit.consensus.params.replace(payload_rate=0.2, loop_rate=0.0, drop_rate=0.0,
                                          pull_interval=5.0)
    doc = kit.make_consensus(kit.nodes, params)
    providers = [d.node_id for d in doc.providers()]
    return ClientCore(
        doc, provider=providers[0], mailbox=MAILBOX, rng=random.Random(3),
        now=kit.start, config=ClientConfig(extra_delay_mean=1.0, **config),
        sphinx=kit.fake_sphinx(),
    )


def run(core: ClientCore, until: float) -> tuple[list[float], list[object]]:
    """Poll until ``until``; the times of real packets and the message events."""
    real, events = [], []
    while (t := core.next_deadline()) <= until:
        for a in core.poll(t):
            if isinstance(a, SendPacket) and a.kind is PacketKind.REAL:
                real.append(t)
            elif isinstance(a, MessageDelivered | MessageUndeliverable):
                events.append(a)
    return real, events


def test_a_message_sent_while_the_link_is_down_waits_and_goes_out_when_it_is_back(kit) -> None:
    core = make_core(kit, retry_budget=HOUR)
    core.set_link(False, kit.start)
    mid = core.send_message(kit.consensus.providers()[1].node_id, BOB, b"later", kit.start,
                            seal_key=BOB_KEY)
    real, events = run(core, kit.start + 2 * HOUR)  # longer than the whole retry budget
    assert real == [] and events == []
    assert core.message_state(mid) is MessageState.PENDING
    assert core.statistics().fragments_queued == 1
    assert core.statistics().packets_sent["decoy"] > 0  # the slots still fired, as cover
    core.set_link(True, kit.start + 2 * HOUR)
    real, _ = run(core, kit.start + 2 * HOUR + 10)
    assert len(real) == 1


def test_retries_back_off_until_a_time_budget_not_an_attempt_count(kit) -> None:
    budget = 2 * HOUR
    core = make_core(kit, retry_budget=budget)
    mid = core.send_message(kit.consensus.providers()[1].node_id, BOB, b"into the void",
                            kit.start, seal_key=BOB_KEY)
    real, events = run(core, kit.start + budget + 600)
    [failed] = events
    assert isinstance(failed, MessageUndeliverable) and failed.message_id == mid
    assert failed.reason is UndeliverableReason.RETRY_BUDGET_EXHAUSTED
    assert "7200 s" in failed.detail
    assert budget - 400 <= failed.at - kit.start <= budget + 400  # about when it ran out
    assert len(real) > 5  # the old budget was 5 attempts in ~20 s
    gaps = [b - a for a, b in itertools.pairwise(real)]
    assert max(gaps[-5:]) > 10 * min(gaps[:2])  # backing off
    cap = core.config.backoff_max * 1.5 + 60
    assert max(gaps) < cap  # ... but never more than the cap between two tries
    footprint = core.memory_footprint()
    assert footprint["surbs"] == 0 and footprint["timers"] == 0


def test_a_resumed_message_keeps_the_budget_it_started_with(kit) -> None:
    core = make_core(kit, retry_budget=HOUR)
    t0 = kit.start
    core.send_message(kit.consensus.providers()[1].node_id, BOB, b"old", t0,
                      created=t0 - HOUR + 120, seal_key=BOB_KEY)  # queued before a restart
    _, events = run(core, t0 + 600)
    [failed] = events
    assert isinstance(failed, MessageUndeliverable) and failed.at - t0 < 600


def test_surbs_of_a_long_retried_fragment_stay_bounded(kit) -> None:
    core = make_core(kit, retry_budget=10 * HOUR)
    core.send_message(kit.consensus.providers()[1].node_id, BOB, b"x", kit.start, seal_key=BOB_KEY)
    run(core, kit.start + 2 * HOUR)
    assert core.statistics().retransmissions > core.config.surbs_per_fragment
    assert 0 < core.memory_footprint()["surbs"] <= core.config.surbs_per_fragment


def test_backoff_table_and_formula() -> None:
    assert next_state(FragmentState.IN_FLIGHT, ArqInput.RETRY) is FragmentState.BACKOFF
    assert next_state(FragmentState.BACKOFF, ArqInput.RESUME) is FragmentState.QUEUED
    assert next_state(FragmentState.BACKOFF, ArqInput.ACK) is FragmentState.ACKED  # late ACK
    assert next_state(FragmentState.BACKOFF, ArqInput.GIVE_UP) is FragmentState.FAILED
    rng = random.Random(1)
    draws = [retry_backoff(n, base=1.0, cap=300.0, rng=rng) for n in range(1, 20)]
    assert 0.5 <= draws[0] <= 1.5 and all(d <= 450.0 for d in draws)
    assert draws[12] > 100  # grown to the cap's scale

"""The delivery ledger on a real store: every state change goes through its table (a report
the table lacks is refused), the transport's reports move the right recipient's state, the
progress the daemon polls is kept only while a message is in flight, a restart finds the
messages in flight again, and a withdrawn message leaves nothing behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.messenger.ledger import (
    BY_TRANSPORT,
    TRANSITIONS,
    Delivery,
    DeliveryLedger,
    IllegalTransition,
    advance,
)
from client.storage import KdfParams, Store
from client.transport_db import TransportDB

FAST_KDF = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)

UID, OTHER = b"u" * 16, b"v" * 16
T1, T2, T3 = b"1" * 16, b"2" * 16, b"3" * 16


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.create(tmp_path / "s.db", "pw", kdf=FAST_KDF) as s:
        yield s


def test_the_table_is_total_over_reports_and_only_a_retry_requeues() -> None:
    reports = (Delivery.SENT, Delivery.AT_PROVIDER, Delivery.FAILED, Delivery.DELIVERED)
    for state in Delivery:
        for reported in reports:
            assert (state, reported) in TRANSITIONS
        if state is Delivery.FAILED:
            assert advance(state, Delivery.QUEUED) is Delivery.QUEUED
        else:
            with pytest.raises(IllegalTransition, match="cannot take the report queued"):
                advance(state, Delivery.QUEUED)
    for state in Delivery:  # a receipt wins over everything, nothing undoes it
        assert advance(state, Delivery.DELIVERED) is Delivery.DELIVERED
        assert all(advance(Delivery.DELIVERED, r) is Delivery.DELIVERED for r in reports)


def test_transport_reports_move_their_recipient_only(store: Store) -> None:
    ledger = DeliveryLedger(store)
    ledger.open(UID, ["bob", "carol"], failed={"dave": "key changed"})
    ledger.bind(UID, "bob", T1)
    ledger.bind(UID, "carol", T2)
    assert sorted(ledger.in_flight()) == [T1, T2]
    ledger.on_progress(T1, 1, 0, 2)
    assert ledger.rows(UID)["bob"] == (Delivery.SENT, "")
    assert ledger.rows(UID)["carol"] == (Delivery.QUEUED, "")
    summary = ledger.summary(UID)
    assert summary["state"] == "failed" and summary["reason"] == "key changed"
    assert (summary["fragments_acked"], summary["fragments_total"]) == (0, 2)
    ledger.on_at_provider(T1)
    ledger.on_failed(T2, "retry_budget_exhausted")
    assert ledger.rows(UID) == {"bob": (Delivery.AT_PROVIDER, ""),
                                "carol": (Delivery.FAILED, "retry_budget_exhausted"),
                                "dave": (Delivery.FAILED, "key changed")}
    assert ledger.in_flight() == [] and not ledger.tracks(T1) and store.ids(BY_TRANSPORT) == []
    assert "fragments_total" not in ledger.summary(UID)
    ledger.on_failed(T1, "late")  # a report for a finished transport message changes nothing
    ledger.receipt(UID, "carol")  # the receipt wins over the failure
    ledger.receipt(UID, "bob")
    assert sorted(ledger.failed_recipients(UID)) == ["dave"]
    ledger.requeue(UID, "dave")
    ledger.refused(UID, "dave", "not sent again: blocked")
    assert ledger.rows(UID)["dave"] == (Delivery.FAILED, "not sent again: blocked")
    with pytest.raises(IllegalTransition):
        ledger.requeue(UID, "bob")  # delivered: nothing to send again


def test_poll_takes_what_changed_and_lets_finished_messages_go(store: Store) -> None:
    ledger = DeliveryLedger(store)
    ledger.open(UID, ["bob"])
    ledger.bind(UID, "bob", T1)
    transport: dict[bytes, tuple[int, int, int]] = {T1: (0, 0, 3)}
    asked: list[bytes] = []

    def progress_of(tid: bytes) -> tuple[int, int, int] | None:
        asked.append(tid)
        return transport.get(tid)

    ledger.poll(progress_of)
    assert ledger.rows(UID)["bob"][0] is Delivery.QUEUED
    assert ledger.summary(UID)["fragments_total"] == 3
    transport[T1] = (3, 1, 3)
    ledger.poll(progress_of)
    assert ledger.rows(UID)["bob"][0] is Delivery.SENT
    assert ledger.summary(UID)["fragments_acked"] == 1
    del transport[T1]  # finished in the transport (its outcome comes as its own report)
    ledger.poll(progress_of)
    assert ledger.in_flight() == []
    asked.clear()
    ledger.poll(progress_of)
    assert asked == []


def test_control_messages_are_not_tracked_and_a_restart_finds_the_flight(store: Store) -> None:
    ledger = DeliveryLedger(store)
    ledger.bind(OTHER, "bob", T3)  # a receipt: no stored message behind it
    assert not ledger.tracks(T3) and ledger.in_flight() == []
    ledger.open(UID, ["bob"])
    ledger.bind(UID, "bob", T1)
    again = DeliveryLedger(store)  # the daemon restarted
    assert again.in_flight() == [T1] and again.tracks(T1)
    again.on_at_provider(T1)
    assert again.rows(UID)["bob"][0] is Delivery.AT_PROVIDER


def test_withdraw_leaves_no_row_binding_or_envelope(store: Store) -> None:
    db = TransportDB(store)
    ledger = DeliveryLedger(store)
    ledger.open(UID, ["bob"])
    for tid in (T1, T2):  # sent, failed, sent again
        db.add_outgoing(tid, os.urandom(32), os.urandom(16), os.urandom(32), b"ct", now=1.0)
        ledger.bind(UID, "bob", tid)
    ledger.on_failed(T1, "retry_budget_exhausted")
    ledger.withdraw(UID)
    assert ledger.rows(UID) == {} and store.ids(BY_TRANSPORT) == []
    assert db.get_outgoing(T2) is None and ledger.in_flight() == []
    assert ledger.take_withdrawn() == [T1, T2] and ledger.take_withdrawn() == []
    ledger.on_at_provider(T2)  # the transport's late outcome finds nothing
    ledger.withdraw(UID)
    assert ledger.take_withdrawn() == []

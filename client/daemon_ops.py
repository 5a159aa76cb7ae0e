"""The daemon's own operations on the local API, and the one registry that answers every
request: these, plus the messenger's (``client/messenger/ops.py``) mounted with the daemon's
messenger. The operations and their results are listed in ``client/api.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client.api_ops import Registry, Request
from client.errors import ClientError
from client.messenger import ops as messenger_ops

if TYPE_CHECKING:
    from client.daemon import ClientDaemon

REGISTRY: Registry[ClientDaemon] = Registry()
op = REGISTRY.op


def _messenger(daemon: ClientDaemon) -> messenger_ops.MessengerContext:
    if daemon.messenger is None:
        raise ClientError(
            "this client has no message store (it was created without a passphrase);"
            f" create one with: mixnet client init --dir {daemon.config.data_dir} --force"
        )
    return messenger_ops.MessengerContext(daemon.messenger, daemon.send_envelopes)


REGISTRY.mount(messenger_ops.REGISTRY, via=_messenger)


@op("status")
def _status(daemon: ClientDaemon, request: Request) -> dict[str, Any]:
    return daemon.status()


@op("address")
def _address(daemon: ClientDaemon, request: Request) -> dict[str, Any]:
    return {"provider": daemon.provider_id, "mailbox": daemon.mailbox, "text": daemon.address()}


@op("send")
def _send(daemon: ClientDaemon, request: Request) -> dict[str, Any]:
    provider = request.get("provider")
    mailbox, data = request.get("mailbox"), request.get("data")
    key = request.get("mailbox_key")
    if not (isinstance(provider, bytes) and isinstance(mailbox, bytes)
            and isinstance(key, bytes) and isinstance(data, bytes)):
        raise ClientError("send needs provider, mailbox, mailbox_key and data as bytes")
    return {"message_id": daemon.send_raw(provider, mailbox, key, data)}


@op("message")
def _message(daemon: ClientDaemon, request: Request) -> dict[str, Any]:
    message_id = request.get("message_id")
    if not isinstance(message_id, bytes):
        raise ClientError("message needs message_id as bytes")
    stored = daemon.db.get_outgoing(message_id)
    if stored is None:
        assert daemon.core is not None
        state = daemon.core.message_state(message_id)
        if state is None:
            raise ClientError("unknown message id")
        return {"state": state.value, "reason": ""}
    return {"state": stored.state, "reason": stored.reason}


@op("inbox")
def _inbox(daemon: ClientDaemon, request: Request) -> list[dict[str, Any]]:
    after, limit = request.get("after", 0), request.get("limit", 100)
    if not isinstance(after, int) or not isinstance(limit, int) or not 0 < limit <= 1000:
        raise ClientError("inbox needs integer after and 0 < limit <= 1000")
    rows = daemon.db.incoming(after=after, unread_only=bool(request.get("unread_only")),
                              limit=limit)
    return [
        {"seq": r.seq, "message_id": r.message_id, "data": r.data,
         "received_at": r.received_at, "read": r.read}
        for r in rows
    ]


@op("mark_read")
def _mark_read(daemon: ClientDaemon, request: Request) -> dict[str, Any]:
    seqs = request.get("seqs")
    if not isinstance(seqs, list) or not all(isinstance(s, int) for s in seqs):
        raise ClientError("mark_read needs a list of integer seqs")
    return {"marked": daemon.db.mark_read(seqs)}


@op("outbox")
def _outbox(daemon: ClientDaemon, request: Request) -> list[dict[str, Any]]:
    state = request.get("state")
    return [
        {"message_id": m.message_id, "state": m.state, "reason": m.reason,
         "created": m.created, "updated": m.updated, "size": m.size}
        for m in daemon.db.outgoing(state=state if isinstance(state, str) else None)
    ]

"""``mixnet client passphrase`` and ``mixnet client accept-restore``: offline operations on a
client's encrypted store. Both need the daemon stopped (it holds the store open and keeps the
store's integrity record in memory), and say so if it is running.

* ``passphrase`` re-keys the message store: a new data key, every row re-sealed, the file
  vacuumed (:meth:`client.storage.Store.change_passphrase`). The new passphrase comes from
  ``--new-passphrase-file``, else ``$MIXNET_NEW_PASSPHRASE``, else a prompt (asked twice).
* ``accept-restore`` accepts a store that is older than its rollback counter file, after the
  user restored it from a backup on purpose; from then on that copy is the reference.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from client import daemon_lock
from client.daemon_config import ClientConfigError, DaemonConfig
from client.messenger.commands import DIR_ENV, data_dir
from mixcore.errors import MixnetError

STORE_NAME = "messenger.db"
NEW_PASSPHRASE_ENV = "MIXNET_NEW_PASSPHRASE"  # noqa: S105  # a variable name, not a secret


@contextlib.contextmanager
def _offline(args: argparse.Namespace) -> Iterator[DaemonConfig]:
    """The client's config, with the daemon's lock held for the whole operation: a running
    daemon (even one still waiting for its first consensus, with the store already open) is
    refused, and none can start half-way through a re-key."""
    config = DaemonConfig.load(data_dir(args))
    try:
        lock = daemon_lock.acquire(config.data_dir)
    except daemon_lock.DaemonRunning as running:
        who = f" (PID {running.pid})" if running.pid else ""
        raise ClientConfigError(
            f"the client daemon is running in {config.data_dir}{who}; it holds the store "
            "open: stop it, then run this again"
        ) from None
    try:
        yield config
    finally:
        lock.release()


def _new_passphrase(file: str | None) -> str:
    if file:
        try:
            text = Path(file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ClientConfigError(f"cannot read passphrase file {file}: {exc.strerror}") from None
        if not text:
            raise ClientConfigError(f"passphrase file {file} is empty")
        return text
    env = os.environ.get(NEW_PASSPHRASE_ENV)
    if env:
        return env
    if not sys.stdin.isatty():
        raise ClientConfigError(
            f"give the new passphrase with --new-passphrase-file or ${NEW_PASSPHRASE_ENV}"
        )
    first = getpass.getpass("new passphrase for the message store: ")
    if not first:
        raise ClientConfigError("the passphrase must not be empty")
    if getpass.getpass("again: ") != first:
        raise ClientConfigError("the two passphrases differ; nothing was changed")
    return first


def _emit(result: dict[str, object], as_json: bool, human: str) -> None:
    print(json.dumps(result) if as_json else human)


def _passphrase(args: argparse.Namespace) -> int:
    from client.cli import read_passphrase  # noqa: PLC0415  # cli imports this module
    from client.storage import Store  # noqa: PLC0415  # heavy: only these commands need it

    with _offline(args) as config:
        path = config.data_dir / STORE_NAME
        if not path.exists():
            raise ClientConfigError(
                f"{config.data_dir} has no message store (transport-only client)")
        old = read_passphrase(args.passphrase_file, confirm=False)
        if old is None:
            raise ClientConfigError("give the current passphrase (--passphrase-file, "
                                    "$MIXNET_PASSPHRASE, or run interactively)")
        new = _new_passphrase(args.new_passphrase_file)
        with Store.open(path, old) as store:
            store.change_passphrase(old, new)
    _emit({"store": str(path), "rekeyed": True}, args.json,
          f"passphrase changed; every row of {path} was re-sealed under a new key")
    return 0


def _accept_restore(args: argparse.Namespace) -> int:
    from client.cli import read_passphrase  # noqa: PLC0415
    from client.storage import Store  # noqa: PLC0415
    from client.transport_db import DATABASE_NAME, KEY_NAME  # noqa: PLC0415

    accepted = []
    with _offline(args) as config:
        path = config.data_dir / STORE_NAME
        if path.exists():
            passphrase = read_passphrase(args.passphrase_file, confirm=False)
            if passphrase is None:
                raise ClientConfigError("give the passphrase (--passphrase-file, "
                                        "$MIXNET_PASSPHRASE, or run interactively)")
            Store.open(path, passphrase, accept_rollback=True).close()
            accepted.append(str(path))
        transport, key = config.data_dir / DATABASE_NAME, config.data_dir / KEY_NAME
        if transport.exists() and key.exists():
            Store.open(transport, key.read_text().strip(), accept_rollback=True).close()
            accepted.append(str(transport))
    if not accepted:
        raise MixnetError(f"{config.data_dir} holds no store to accept")
    _emit({"accepted": accepted}, args.json,
          "accepted as the current copy: " + ", ".join(accepted))
    return 0


def _dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None, metavar="DIR",
                   help=f"the client's data directory (default: ${DIR_ENV})")


def register(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Mount ``passphrase`` and ``accept-restore`` under ``mixnet client``."""
    p = cmds.add_parser("passphrase", help="change the store's passphrase (re-keys every row;"
                        " stop the daemon first)")
    _dir(p)
    p.add_argument("--passphrase-file", metavar="PATH",
                   help="the current passphrase (else $MIXNET_PASSPHRASE or a prompt)")
    p.add_argument("--new-passphrase-file", metavar="PATH",
                   help=f"the new passphrase (else ${NEW_PASSPHRASE_ENV} or a prompt)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_passphrase)
    p = cmds.add_parser("accept-restore", help="accept a store you restored from a backup "
                        "(it is older than its rollback counter)")
    _dir(p)
    p.add_argument("--passphrase-file", metavar="PATH",
                   help="the passphrase (else $MIXNET_PASSPHRASE or a prompt)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_accept_restore)

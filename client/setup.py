"""Creating a client: its config, link key (its mailbox credential) and, with a passphrase, its
encrypted message store with a new identity, in one call.

:func:`init_client` is what ``mixnet client init`` runs (after it has resolved the network from
``--join`` or ``--authority``/``--params``, and read the passphrase), and what the testnet
harness calls directly; both get a :class:`ClientInfo` back, and the command prints
:meth:`ClientInfo.to_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.daemon_config import ClientConfigError, DaemonConfig
from mixcore.params import NetworkParams

if TYPE_CHECKING:
    from client.e2e.cards import ContactCard
    from mixcore.consensus import AuthorityRef

STORE_NAME = "messenger.db"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a new client is: where its config lies, its provider and mailbox, whether it has
    a message store (the messenger), and its contact card when one could be made (that needs
    the provider's node id, which ``--join`` knows and a bare name does not)."""

    config: Path
    data_dir: Path
    provider: str
    mailbox: bytes
    messenger: bool
    card: ContactCard | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``mixnet client init --json`` prints."""
        out: dict[str, Any] = {"config": str(self.config), "provider": self.provider,
                               "mailbox": self.mailbox.hex(), "messenger": self.messenger}
        if self.card is not None:
            out["card"] = self.card.to_text()
        return out


def _default_name(data: Path) -> str:
    """The directory's name, or for a hidden one (``~/.mixnet``) its parent's: the user."""
    return data.parent.name if data.name.startswith(".") else data.name


def init_client(
    data_dir: Path,
    *,
    provider: str,
    authorities: tuple[AuthorityRef, ...],
    threshold: int,
    params: NetworkParams,
    passphrase: str | None,
    name: str = "",
    force: bool = False,
) -> ClientInfo:
    """Write a new client in ``data_dir``: ``client.json``, its link key, and with a
    ``passphrase`` its message store holding a new identity (None: a transport-only client).
    ``provider`` is the provider's name or node id; ``name`` defaults to the folder's name.
    An existing client is refused unless ``force`` (its keys and messages are then lost)."""
    # Creating a client needs keys, cards and the store's KDF; other commands do not.
    from client.e2e.cards import ContactCard  # noqa: PLC0415
    from client.e2e.identity import UserIdentity  # noqa: PLC0415
    from client.mailbox_seal import MailboxKey  # noqa: PLC0415
    from client.storage import Store  # noqa: PLC0415
    from mixcore.keys import LinkKey, save_link_key  # noqa: PLC0415
    from mixcore.routing import mailbox_address  # noqa: PLC0415

    data = Path(data_dir).resolve()
    if (data / "client.json").exists() and not force:
        raise ClientConfigError(f"{data} already holds a client; use --force to overwrite")
    config = DaemonConfig(
        data_dir=data,
        provider=provider,
        authorities=authorities,
        threshold=threshold,
        params=params,
        name=name or _default_name(data),
    )
    path = config.save()
    key = LinkKey.generate()
    save_link_key(config.link_key_path, key)
    mailbox = mailbox_address(key.public)
    store_path = data / STORE_NAME
    if force:
        store_path.unlink(missing_ok=True)
    card = None
    if passphrase is not None:
        identity = UserIdentity.generate()
        with Store.create(store_path, passphrase) as store:
            store.save_identity(identity)
        try:
            provider_id = bytes.fromhex(provider)
        except ValueError:
            provider_id = b""
        if len(provider_id) == 32:
            card = ContactCard.create(
                identity, provider_id, mailbox, MailboxKey.from_link_key(key).public
            )
    return ClientInfo(path, data, provider, mailbox, passphrase is not None, card)

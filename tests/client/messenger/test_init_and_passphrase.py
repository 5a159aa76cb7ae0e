"""``mixnet client init`` makes the identity and the encrypted store (0600) from the
passphrase, prints the card when the provider id is known, and never echoes the passphrase."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from client.cli import read_passphrase
from client.e2e.cards import ContactCard
from client.storage import Store, WrongPassphrase
from mixcore.errors import MixnetError
from mixcore.params import NetworkParams
from mixnet.cli import main

AUTHORITY = "ab" * 32 + "@http://127.0.0.1:1"
PASSPHRASE = "a passphrase nobody guesses"


def init(tmp_path: Path, provider: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    params = tmp_path / "params.json"
    params.write_text(json.dumps(NetworkParams().to_dict()))
    status = main(["client", "init", "--dir", str(tmp_path / "c"), "--provider", provider,
                   "--authority", AUTHORITY, "--params", str(params), "--json"])
    assert status == 0
    out, err = capsys.readouterr()
    assert PASSPHRASE not in out + err
    return dict(json.loads(out))


def test_init_creates_store_and_prints_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MIXNET_PASSPHRASE", PASSPHRASE)
    provider = "cd" * 32
    result = init(tmp_path, provider, capsys)
    card = ContactCard.from_text(result["card"])
    assert card.provider.hex() == provider and card.mailbox.hex() == result["mailbox"]
    db = tmp_path / "c" / "messenger.db"
    assert os.stat(db).st_mode & 0o777 == 0o600
    with Store.open(db, PASSPHRASE) as store:
        identity = store.load_identity()
        assert identity is not None and identity.identity_key == card.identity_key
    with pytest.raises(WrongPassphrase):
        Store.open(db, "guess", sleep=lambda _: None)


def test_init_without_any_passphrase_source_is_transport_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MIXNET_PASSPHRASE", raising=False)
    result = init(tmp_path, "provider1", capsys)
    assert result["messenger"] is False
    assert not (tmp_path / "c" / "messenger.db").exists()


def test_passphrase_file_wins_and_empty_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXNET_PASSPHRASE", "from env")
    f = tmp_path / "pw"
    f.write_text("from file\n")
    assert read_passphrase(str(f), confirm=False) == "from file"
    assert read_passphrase(None, confirm=False) == "from env"
    f.write_text("")
    with pytest.raises(MixnetError, match="empty"):
        read_passphrase(str(f), confirm=False)


def test_commands_need_a_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MIXNET_CLIENT_DIR", raising=False)
    assert main(["contact", "list"]) == 1
    assert "MIXNET_CLIENT_DIR" in capsys.readouterr().err

"""The client daemon's configuration file (``client.json``) in its data directory.

Importing this module stays light (no consensus or Sphinx code), so that every ``mixnet``
command that only talks to the daemon starts quickly.

The data directory holds the link key (the mailbox credential), the transport database and the
API socket; it is created 0700 so that the socket inside it is reachable by its owner only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixcore.errors import MixnetError, ParamsError
from mixcore.files import write_atomic
from mixcore.params import NetworkParams

CONFIG_NAME = "client.json"
LINK_KEY_NAME = "link.key"
SOCKET_NAME = "api.sock"
DATABASE_NAME = "transport.db"

if TYPE_CHECKING:
    from mixcore.consensus import AuthorityRef, AuthoritySet


class ClientConfigError(MixnetError):
    """The client configuration is missing, malformed or inconsistent."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    data_dir: Path
    provider: str
    """The provider's node name or its identity key in hex, resolved in the consensus."""
    authorities: tuple[AuthorityRef, ...]
    threshold: int
    params: NetworkParams
    name: str = ""

    def __post_init__(self) -> None:
        if not self.provider:
            raise ClientConfigError("provider: a provider name or node id is required")
        if not self.authorities:
            raise ClientConfigError("authorities: at least one is required")
        try:
            self.authority_set  # noqa: B018  # validates the threshold
        except ParamsError as exc:
            raise ClientConfigError(str(exc)) from None

    @property
    def authority_set(self) -> AuthoritySet:
        from mixcore.consensus import AuthoritySet  # noqa: PLC0415  # keeps the CLI quick

        return AuthoritySet(tuple(a.identity_key for a in self.authorities), self.threshold)

    @property
    def socket_path(self) -> Path:
        return self.data_dir / SOCKET_NAME

    @property
    def link_key_path(self) -> Path:
        return self.data_dir / LINK_KEY_NAME

    @property
    def database_path(self) -> Path:
        return self.data_dir / DATABASE_NAME

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data_dir": str(self.data_dir),
            "provider": self.provider,
            "authorities": [a.to_json() for a in self.authorities],
            "threshold": self.threshold,
            "params": self.params.to_dict(),
        }

    @classmethod
    def from_json(cls, data: Any, base: Path) -> DaemonConfig:
        from mixcore.consensus import AuthorityRef  # noqa: PLC0415  # keeps the CLI quick

        try:
            data_dir = Path(data["data_dir"])
            return cls(
                data_dir=data_dir if data_dir.is_absolute() else base / data_dir,
                provider=str(data["provider"]),
                authorities=tuple(AuthorityRef.from_json(a) for a in data["authorities"]),
                threshold=int(data["threshold"]),
                params=NetworkParams.from_dict(data["params"]),
                name=str(data.get("name", "")),
            )
        except ClientConfigError:
            raise
        except ParamsError as exc:
            raise ClientConfigError(str(exc)) from None
        except KeyError as exc:
            raise ClientConfigError(f"missing config field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ClientConfigError(f"malformed client config: {exc}") from None

    def save(self) -> Path:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        path = self.data_dir / CONFIG_NAME
        write_atomic(path, (json.dumps(self.to_json(), indent=2) + "\n").encode())
        return path

    @classmethod
    def load(cls, data_dir: str | os.PathLike[str]) -> DaemonConfig:
        path = Path(data_dir) / CONFIG_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClientConfigError(
                f"no client in {data_dir} (create one with: mixnet client init --dir {data_dir})"
            ) from None
        except (OSError, ValueError) as exc:
            raise ClientConfigError(f"cannot read {path}: {exc}") from None
        return cls.from_json(data, path.parent)


def socket_of(data_dir: str | os.PathLike[str]) -> Path:
    """The API socket of the client in ``data_dir``, without reading the whole config (a
    command that only talks to the daemon needs nothing else); a clear error if there is no
    client there."""
    if not (Path(data_dir) / CONFIG_NAME).is_file():
        raise ClientConfigError(
            f"no client in {data_dir} (create one with: mixnet client init --dir {data_dir})"
        )
    return Path(data_dir) / SOCKET_NAME

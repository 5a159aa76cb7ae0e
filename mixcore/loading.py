"""The files a role is handed at start: network parameters, the bootstrap, mix keys.

A shell (it reads and writes files): the cores parse and build the records
(:meth:`NetworkParams.from_dict`, :meth:`Bootstrap.from_file_bytes`,
:func:`~mixcore.sphinx.mix_key_from_record`), this module only moves them to and from disk,
so no core opens a file and each loader's errors name the file they are about. Identity and
link keys have theirs in :mod:`mixcore.keys`, which also keeps the 0600 rules every key file
follows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mixcore.bootstrap import MAX_BOOTSTRAP_BYTES, PREFIX, Bootstrap, BootstrapError
from mixcore.errors import ParamsError, ParamsFileError
from mixcore.keys import load_secret, save_secret
from mixcore.params import NetworkParams
from mixcore.sphinx import MIX_KEY_KINDS, MixPrivateKey, mix_key_from_record, mix_key_record

__all__ = ["load_bootstrap", "load_mix_key", "load_params", "save_mix_key"]


def load_params(path: str | os.PathLike[str]) -> NetworkParams:
    """Read a JSON params file (as ``mixnet params --json`` prints); every role's ``init``
    takes one with ``--params``. Any problem is a :class:`ParamsFileError` naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsFileError(f"params file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ParamsFileError(f"params file {path} is not readable JSON: {exc}") from None
    try:
        return NetworkParams.from_dict(data)
    except (ParamsError, TypeError) as exc:
        raise ParamsFileError(f"params file {path}: {exc}") from None


def load_bootstrap(value: str) -> Bootstrap:
    """A bootstrap line, or the path of a file holding one (text or JSON)."""
    if value.strip().startswith(PREFIX):
        return Bootstrap.parse(value)
    path = Path(value)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BOOTSTRAP_BYTES + 1)
    except FileNotFoundError:
        raise BootstrapError(
            f"{value[:80]!r} is neither a bootstrap line ({PREFIX}...) nor a file"
        ) from None
    except OSError as exc:
        raise BootstrapError(f"cannot read bootstrap file {path}: {exc.strerror}") from None
    return Bootstrap.from_file_bytes(raw, str(path))


def save_mix_key(path: str | os.PathLike[str], key: MixPrivateKey, epoch: int) -> None:
    """Write one epoch's mix key, 0600, atomically (:func:`mixcore.keys.save_secret`)."""
    save_secret(path, mix_key_record(key, epoch))


def load_mix_key(path: str | os.PathLike[str]) -> tuple[int, MixPrivateKey]:
    """Return ``(epoch, key)`` from a mix key file (of either suite: the file's kind says)."""
    return mix_key_from_record(load_secret(path, MIX_KEY_KINDS), str(path))

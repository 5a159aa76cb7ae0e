"""The bootstrap line a newcomer joins with: round trips (line and file, text and JSON), and
every malformed form a clear :class:`BootstrapError` naming what is expected, never a crash."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixcore.bootstrap import MAX_BOOTSTRAP_BYTES, PREFIX, Bootstrap, BootstrapError
from mixcore.consensus import AuthorityRef
from mixcore.keys import IdentityKey
from mixcore.loading import load_bootstrap

KEYS = [IdentityKey.generate().public for _ in range(3)]
#: Fixed keys for parametrized ids (xdist workers must collect the same ids).
FIXED = [bytes([i]) * 32 for i in (1, 2)]
REFS = tuple(AuthorityRef(f"http://127.0.0.1:{8000 + i}", k) for i, k in enumerate(KEYS))


def test_line_and_files_round_trip(tmp_path: Path) -> None:
    b = Bootstrap(REFS, 2)
    line = b.to_text()
    assert line.startswith(PREFIX + "2:") and " " not in line and "\n" not in line
    assert Bootstrap.parse(line) == b
    assert load_bootstrap(line) == b
    (tmp_path / "b.txt").write_text(line + "\n")
    assert load_bootstrap(str(tmp_path / "b.txt")) == b
    (tmp_path / "b.json").write_text(json.dumps(b.to_json()))
    assert load_bootstrap(str(tmp_path / "b.json")) == b
    assert b.authority_set.threshold == 2 and set(b.urls) == {r.url for r in REFS}


@pytest.mark.parametrize(("text", "says"), [
    ("mixnet1:abc", "starts with"),
    (f"{PREFIX}x:{FIXED[0].hex()}@http://h:1", "THRESHOLD"),
    (f"{PREFIX}2", "THRESHOLD"),
    (f"{PREFIX}1:{FIXED[0].hex()[:10]}@http://h:1", "KEYHEX@"),
    (f"{PREFIX}1:{FIXED[0].hex()}@ftp://h:1", "KEYHEX@"),
    (f"{PREFIX}1:{FIXED[0].hex()}@http://a:1,{FIXED[1].hex()}@http://b:1", "majority"),
    (f"{PREFIX}3:{FIXED[0].hex()}@http://a:1", "between 1 and 1"),
    (f"{PREFIX}1:{FIXED[0].hex()}@http://a:1,{FIXED[0].hex()}@http://b:1", "twice"),
], ids=lambda v: v if len(v) < 20 else None)
def test_malformed_lines_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(BootstrapError, match=says):
        Bootstrap.parse(text)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BootstrapError, match="neither a bootstrap line"):
        load_bootstrap(str(tmp_path / "missing.txt"))
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_BOOTSTRAP_BYTES + 1))
    with pytest.raises(BootstrapError, match="over"):
        load_bootstrap(str(big))
    for body, says in (("{nope", "not JSON"), ('{"version": 2}', "version"),
                       ('{"version": 1, "threshold": "2", "authorities": []}', "integer"),
                       ('{"version": 1}', "malformed")):
        (tmp_path / "f.json").write_text(body)
        with pytest.raises(BootstrapError, match=says):
            load_bootstrap(str(tmp_path / "f.json"))


@given(st.text(max_size=300))
def test_any_text_is_a_bootstrap_or_a_bootstrap_error(text: str) -> None:
    with contextlib.suppress(BootstrapError):
        Bootstrap.parse(PREFIX + text)

"""Node configuration: the hop worker fields (count and queue) as an operator writes them."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from mixcore.consensus import AuthorityRef
from mixcore.params import NetworkParams
from mixcore.topology import NodeRole
from mixnode.config import ConfigError, NodeConfig


def config(tmp_path: Path, **changes: Any) -> NodeConfig:
    base = NodeConfig(
        name="n1", role=NodeRole.MIX, data_dir=tmp_path, listen_host="127.0.0.1", listen_port=0,
        authorities=(AuthorityRef("http://127.0.0.1:1", os.urandom(32)),), threshold=1,
        params=NetworkParams(),
    )
    return dataclasses.replace(base, **changes)


def test_workers_default_to_the_cores_minus_one_and_round_trip_through_the_file(
    tmp_path: Path,
) -> None:
    auto = config(tmp_path)
    assert auto.workers is None
    assert auto.effective_workers == max(1, len(os.sched_getaffinity(0)) - 1)
    for value in (None, 0, 3):
        c = config(tmp_path, workers=value, hop_queue=17)
        c.save(tmp_path / "node.json")
        loaded = NodeConfig.load(tmp_path / "node.json")
        assert (loaded.workers, loaded.hop_queue) == (value, 17)
    assert config(tmp_path, workers=0).effective_workers == 0  # the hop in the node process


@pytest.mark.parametrize("bad", [-1, 257, True, 1.5, "2"])
def test_a_bad_worker_count_is_refused_with_the_field_named(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ConfigError, match="workers"):
        config(tmp_path, workers=bad)


def test_an_empty_hop_queue_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hop_queue"):
        config(tmp_path, hop_queue=0)

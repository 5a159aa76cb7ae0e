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


def test_trace_path_is_off_by_default_and_round_trips_relative_to_the_file(
    tmp_path: Path,
) -> None:
    assert config(tmp_path).trace_path is None
    assert NodeConfig.from_json(config(tmp_path).to_json()).trace_path is None
    traced = config(tmp_path, trace_path=tmp_path / "trace.jsonl")
    traced.save(tmp_path / "node.json")
    assert NodeConfig.load(tmp_path / "node.json").trace_path == tmp_path / "trace.jsonl"
    data = {**traced.to_json(), "trace_path": "t.jsonl"}  # as an operator may write it
    assert NodeConfig.from_json(data, base=tmp_path).trace_path == tmp_path / "t.jsonl"


def test_init_node_writes_the_launchers_settings_into_the_config_once(tmp_path: Path) -> None:
    from mixnode.setup import init_node

    info = init_node(
        tmp_path / "p1", role=NodeRole.PROVIDER, listen_host="10.0.0.2", listen_port=4000,
        authorities=(AuthorityRef("http://127.0.0.1:1", os.urandom(32)),), threshold=1,
        params=NetworkParams(), public_host="192.0.2.7", registrations_per_source=99,
    )
    loaded = NodeConfig.load(info.config)
    assert (loaded.name, loaded.advertised_host, loaded.registrations_per_source) == (
        "p1", "192.0.2.7", 99)
    assert info.to_dict() == {"config": str(info.config), "name": "p1", "role": "provider",
                              "identity_key": info.identity_key.hex(),
                              "link_key": info.link_key.hex()}
    with pytest.raises(ConfigError, match="exists"):
        init_node(tmp_path / "p1", role=NodeRole.MIX, listen_host="127.0.0.1", listen_port=0,
                  authorities=loaded.authorities, threshold=1, params=NetworkParams())

"""Network parameters: defaults valid, every bad field named, canonical round trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixcore.errors import DecodeError, MixnetError, ParamsError, ParamsFileError
from mixcore.loading import load_params
from mixcore.params import NetworkParams


def test_defaults_are_valid_and_follow_loopix_shape() -> None:
    params = NetworkParams()
    assert params.layers == 3
    assert params.max_hops == 5
    assert params.body_len == 2048


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("layers", 0),
        ("layers", 9),
        ("body_len", 100),
        ("body_len", 70_000),
        ("payload_rate", 0),
        ("payload_rate", -1.0),
        ("payload_rate", float("inf")),
        ("loop_rate", -0.1),
        ("drop_rate", float("nan")),
        ("mix_loop_rate", -2),
        ("mean_hop_delay", -0.5),
        ("mean_hop_delay", 1000.0),
        ("epoch_length", 0.5),
        ("genesis_time", -1.0),
        ("pull_interval", 0),
        ("pull_batch", 0),
        ("pull_batch", 65),
        ("layers", 2.5),
        ("layers", True),
        ("payload_rate", "fast"),
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ParamsError) as info:
        NetworkParams(**{field: value})
    assert info.value.field == field
    assert field in str(info.value)


def test_integers_are_accepted_for_rates_and_stored_as_floats() -> None:
    params = NetworkParams(payload_rate=3, epoch_length=60)
    assert isinstance(params.payload_rate, float)
    assert params.payload_rate == 3.0


def test_encode_decode_round_trip() -> None:
    params = NetworkParams(layers=2, payload_rate=7.5, epoch_length=10, pull_batch=3)
    assert NetworkParams.decode(params.encode()) == params


def test_dict_round_trip_and_unknown_keys() -> None:
    params = NetworkParams(mean_hop_delay=0.05)
    assert NetworkParams.from_dict(params.to_dict()) == params
    with pytest.raises(ParamsError, match="lambda"):
        NetworkParams.from_dict({"lambda": 3})


def test_decode_rejects_out_of_range_values() -> None:
    wire = NetworkParams().to_wire()
    wire[1] = 0  # layers
    from mixcore.encoding import pack

    with pytest.raises(DecodeError, match="layers"):
        NetworkParams.decode(pack(wire))


def test_replace_validates() -> None:
    with pytest.raises(ParamsError):
        NetworkParams().replace(layers=0)
    assert dataclasses.replace(NetworkParams(), layers=4).max_hops == 6


@given(st.binary(max_size=200))
def test_fuzz_decode(data: bytes) -> None:
    try:
        params = NetworkParams.decode(data)
    except MixnetError:
        return
    assert params.encode() == data


def test_key_grace_and_max_hop_delay_are_derived_so_packets_meet_a_live_key() -> None:
    short = NetworkParams(epoch_length=8.0, mean_hop_delay=0.1)
    assert short.key_grace == 2.0
    assert short.max_hop_delay == 1.0
    long = NetworkParams(epoch_length=3600.0)
    assert long.key_grace == 600.0
    assert long.max_hop_delay * 2 <= long.key_grace


def test_load_reads_what_params_json_prints_and_names_the_file_on_any_problem(
    tmp_path: Path,
) -> None:
    good = tmp_path / "params.json"
    custom = NetworkParams().replace(mean_hop_delay=0.25)
    good.write_text(json.dumps(custom.to_dict()))
    assert load_params(good) == custom
    cases = {
        "absent.json": None,
        "broken.json": "{not json",
        "unknown.json": json.dumps({"bogus_rate": 1}),
        "wrong-type.json": json.dumps([1, 2]),
        "out-of-range.json": json.dumps({**custom.to_dict(), "mean_hop_delay": -1}),
        "bad-arg.json": json.dumps({**custom.to_dict(), "layers": "three"}),
    }
    for name, body in cases.items():
        path = tmp_path / name
        if body is not None:
            path.write_text(body)
        with pytest.raises(ParamsFileError, match=f"params file {path}"):
            load_params(path)

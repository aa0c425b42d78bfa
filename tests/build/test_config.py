"""BuildConfig and the trtexec-style shape/size parsing (no TensorRT needed)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx2trt_lib.build.config import (
    BuildConfig,
    InputRange,
    Profile,
    parse_dims,
    parse_memory_size,
    parse_profile,
    parse_shapes,
    profile_from_min_opt_max,
    profiles_from_specs,
)
from onnx2trt_lib.errors import UsageError


def test_parse_shapes_several_inputs_and_colon_names():
    assert parse_shapes("x:1x3x224x224, mask:1x10") == {"x": (1, 3, 224, 224), "mask": (1, 10)}
    assert parse_shapes("input:0:2x3") == {"input:0": (2, 3)}
    assert parse_shapes("'input:0':2x3") == {"input:0": (2, 3)}
    assert parse_shapes("scalar:") == {"scalar": ()}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("x1x3", "name:1x3x224x224"),
        ("x:1xx3", "not a shape"),
        ("x:1x-3", "not a shape"),
        ("x:1,x:2", "twice"),
        ("", "empty shape spec"),
        ("x:1.5", "not a shape"),
    ],
)
def test_parse_shapes_errors(spec, needle):
    with pytest.raises(UsageError, match=needle):
        parse_shapes(spec)


def test_parse_profile_min_opt_max_and_fixed():
    profile = parse_profile("x:1x3x8x8/4x3x8x8/16x3x8x8,len:1")
    assert profile.get("x") == InputRange("x", (1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    assert profile.get("len").is_static and profile.get("len").opt == (1,)
    assert profile.names == ("len", "x")  # sorted: the same profile always hashes the same


def test_min_greater_than_opt_names_input_and_axis():
    with pytest.raises(
        UsageError, match=r"input 'x': axis 0 needs min <= opt <= max, got 8 / 4 / 16"
    ):
        parse_profile("x:8x3/4x3/16x3")
    with pytest.raises(UsageError, match=r"input 'y': axis 1 .* 1 / 5 / 2"):
        parse_profile("y:1x1/1x5/1x2")


def test_profile_rank_and_slash_count_errors():
    with pytest.raises(UsageError, match="different ranks"):
        parse_profile("x:1x3/1x3x4/1x3")
    with pytest.raises(UsageError, match="MIN/OPT/MAX"):
        parse_profile("x:1x3/2x3")


def test_min_opt_max_triples():
    profile = profile_from_min_opt_max("x:1x3", "x:4x3", "x:8x3")
    assert profile.get("x") == InputRange("x", (1, 3), (4, 3), (8, 3))
    only_opt = profile_from_min_opt_max(None, "x:4x3", None)
    assert only_opt.get("x").is_static
    with pytest.raises(UsageError, match="input 'y' has --opt-shapes but no --max-shapes"):
        profile_from_min_opt_max("x:1,y:1", "x:2,y:2", "x:3")
    with pytest.raises(UsageError, match="need --opt-shapes"):
        profile_from_min_opt_max("x:1", None, "x:3")


def test_several_profiles_from_repeated_options():
    profiles = profiles_from_specs(
        shapes=["x:1x3/2x3/4x3", "x:8x3/16x3/32x3"],
        min_shapes=["x:64x3"],
        opt_shapes=["x:64x3"],
        max_shapes=["x:128x3"],
    )
    assert [p.get("x").max for p in profiles] == [(4, 3), (32, 3), (128, 3)]
    with pytest.raises(UsageError, match="its own --opt-shapes"):
        profiles_from_specs(min_shapes=["x:1", "x:2"], opt_shapes=["x:2"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1G", 1 << 30),
        ("512M", 512 << 20),
        ("1.5GiB", 3 << 29),
        ("64k", 64 << 10),
        ("4096", 4096),
        ("2t", 2 << 40),
        (123, 123),
    ],
)
def test_parse_memory_size(text, expected):
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "1X", "-1G", "0", "1 G B"])
def test_parse_memory_size_errors(text):
    with pytest.raises(UsageError):
        parse_memory_size(text)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 10_000),
    st.sampled_from(["", "k", "K", "m", "M", "g", "G"]),
    st.sampled_from(["", "B", "iB"]),
)
def test_parse_memory_size_property(value, unit, suffix):
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit.lower()]
    if unit == "" and suffix == "iB":
        return  # "5iB" is not a size
    assert parse_memory_size(f"{value}{unit}{suffix}") == value * scale


dims = st.lists(st.integers(0, 64), min_size=0, max_size=5)


@settings(max_examples=60, deadline=None)
@given(dims)
def test_parse_dims_roundtrip(shape):
    assert parse_dims("x".join(map(str, shape))) == tuple(shape)


def test_build_config_is_frozen_and_validates():
    config = BuildConfig(workspace=1 << 20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.fp16 = True  # type: ignore[misc]
    with pytest.raises(UsageError, match="unknown backend 'tensorrt-12'"):
        BuildConfig(backend="tensorrt-12")
    with pytest.raises(UsageError, match="--int8 needs calibration"):
        BuildConfig(int8=True)
    with pytest.raises(UsageError, match="not both"):
        BuildConfig(int8=True, calibration_cache="c", calibration_data="d")
    with pytest.raises(UsageError, match="add --int8"):
        BuildConfig(calibration_cache="c")
    with pytest.raises(UsageError, match="0..5"):
        BuildConfig(builder_optimization_level=7)
    with pytest.raises(UsageError, match="positive"):
        BuildConfig(workspace=0)
    with pytest.raises(UsageError, match="hardware compatibility"):
        BuildConfig(hardware_compatibility="everything")
    with pytest.raises(UsageError, match="Profile objects"):
        BuildConfig(profiles=("x:1x3",))  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    fp16=st.booleans(),
    workspace=st.one_of(st.none(), st.integers(1, 1 << 40)),
    level=st.one_of(st.none(), st.integers(0, 5)),
    batch=st.integers(1, 8),
    vc=st.booleans(),
)
def test_config_dict_roundtrip(fp16, workspace, level, batch, vc):
    profile = Profile((InputRange("x", (1, 3), (batch, 3), (batch * 2, 3)),))
    config = BuildConfig(
        fp16=fp16,
        workspace=workspace,
        builder_optimization_level=level,
        profiles=(profile,),
        version_compatible=vc,
        timing_cache="t.cache",
    )
    again = BuildConfig.from_dict(config.to_dict())
    assert again == config and hash(again) == hash(config)
    assert config.replace(fp16=not fp16) != config


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(UsageError, match="unknown build config keys: precision"):
        BuildConfig.from_dict({"precision": "fp16"})


@pytest.mark.parametrize("text", ["100000000T", "1025T", "9" * 5000 + "G", "0.0000001"])
def test_parse_memory_size_out_of_range_is_a_usage_error(text):
    with pytest.raises(UsageError, match=r"more than 1 PiB|must be positive"):
        parse_memory_size(text)
    assert parse_memory_size("1024T") == 1 << 50  # the cap itself is accepted


@pytest.mark.parametrize(
    "text",
    ["99999999999999999999", "1x9223372036854775808", "9" * 5000, "0" * 5000 + "1" + "0" * 19],
)
def test_parse_dims_beyond_int64_is_a_usage_error(text):
    with pytest.raises(UsageError, match="has a dimension above 9223372036854775807"):
        parse_dims(text, where="input 'x'")
    assert parse_dims("0" * 5000 + "7") == (7,)


def test_build_config_refuses_out_of_range_numbers():
    with pytest.raises(UsageError, match="up to 1125899906842624"):
        BuildConfig(workspace=(1 << 50) + 1)
    with pytest.raises(UsageError, match="above 9223372036854775807"):
        InputRange("x", (1,), (1,), (2**63,))

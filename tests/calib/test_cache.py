"""TensorRT calibration cache: byte-exact round trips of real caches and of generated ones."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx2trt_lib._io import OutputError
from onnx2trt_lib.calib.cache import (
    CalibrationCache,
    bits_to_float,
    parse_cache,
    read_cache,
    trt_version_number,
    write_cache,
)
from onnx2trt_lib.errors import CacheFormatError

REAL = [
    "mlperf_v0.5_nvidia_resnet50_TRT-6001-EntropyCalibration2.cache",
    "mlperf_v0.5_nvidia_gnmt_TRT-6001-MinMaxCalibration.cache",
    "mlperf_v2.1_nvidia_ssd-mobilenet_TRT-8001-EntropyCalibration2.cache",
]


@pytest.mark.parametrize("name", REAL)
def test_real_caches_round_trip_byte_for_byte(shared_dir, tmp_path, name):
    path = shared_dir / "data" / "trt_caches" / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    original = path.read_bytes()
    cache = read_cache(path)
    assert cache.to_bytes() == original
    write_cache(tmp_path / "copy.cache", cache)
    assert (tmp_path / "copy.cache").read_bytes() == original
    # header fields come from the file name's own record of them
    version, algorithm = name.split("TRT-")[1].removesuffix(".cache").split("-")
    assert (cache.version, cache.algorithm) == (version, algorithm)
    assert len(cache.bits) == original.count(b"\n") - 1


def test_real_cache_values_decode_as_scales(shared_dir):
    path = shared_dir / "data" / "trt_caches" / REAL[2]
    if not path.is_file():
        pytest.skip(f"{path} absent")
    cache = read_cache(path)
    relu6 = [n for n in cache.bits if n.endswith("Relu6")]
    assert relu6, "the SSD-MobileNet cache has Relu6 outputs"
    for n in relu6:  # Relu6 output range is exactly [0, 6]: scale = float32(6/127)
        assert cache.bits[n] == 0x3D418306
        assert cache.amax[n] == pytest.approx(6.0, rel=1e-7)
    gnmt = read_cache(shared_dir / "data" / "trt_caches" / REAL[1])
    assert any(v == 0x7F800000 for v in gnmt.bits.values())  # MinMax caches may hold +inf
    assert "Query Embedding Indices" in gnmt.bits  # names with spaces


def test_trt_version_numbers_follow_tensorrt_convention():
    assert trt_version_number("6.0.1") == "6001"
    assert trt_version_number("8.0.1") == "8001"
    assert trt_version_number("8.4.2") == "8402"
    assert trt_version_number("7.2.3.4") == "7203"
    assert trt_version_number("10.3.0") == "100300"
    assert trt_version_number("10.13.2") == "101302"
    assert trt_version_number("8001") == "8001"
    with pytest.raises(CacheFormatError):
        trt_version_number("ten")


def test_names_with_colons_split_at_the_last_separator(tmp_path):
    names = ["(Unnamed Layer* 3) [Padding]_output", "a: b: c", "x:y", "ünïcode/τ"]
    cache = CalibrationCache(
        version="8601",
        algorithm="EntropyCalibration2",
        bits={n: 0x3C010204 + i for i, n in enumerate(names)},
    )
    text = cache.to_bytes()
    assert text.startswith(b"TRT-8601-EntropyCalibration2\n") and text.endswith(b"\n")
    assert b"a: b: c: 3c010205\n" in text
    back = parse_cache(text)
    assert dict(back.bits) == dict(cache.bits) and list(back.bits) == names


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20))
def test_every_float32_bit_pattern_round_trips(values):
    # includes subnormals, signed zeros, infinities and NaN payloads
    cache = CalibrationCache(version="100300", bits={f"t{i}": v for i, v in enumerate(values)})
    data = cache.to_bytes()
    lines = data.decode().splitlines()[1:]
    assert [line.split(": ")[1] for line in lines] == [struct.pack(">I", v).hex() for v in values]
    assert parse_cache(data).to_bytes() == data


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=3.0000000054977558e38, allow_subnormal=True, width=32))
def test_from_amax_writes_big_endian_float32_of_amax_over_127(amax):
    cache = CalibrationCache.from_amax({"t": amax}, version="8.6.1")
    expected = np.array([amax / 127.0], dtype=">f4").tobytes().hex()  # numpy's own float32 rounding
    assert cache.to_bytes() == f"TRT-8601-EntropyCalibration2\nt: {expected}\n".encode()
    assert parse_cache(cache.to_bytes()).scales["t"] == float(np.float32(amax / 127.0))


def test_subnormal_scale_decodes_exactly():
    assert bits_to_float(0x00000001) == float(np.array([1], np.uint32).view(np.float32)[0])
    assert bits_to_float(0x007FFFFF) == float(np.array([0x007FFFFF], np.uint32).view(np.float32)[0])


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        (b"", 1, "empty"),
        (b"TRT-EntropyCalibration2\nx: 3c010204\n", 1, "header"),
        (b"hello\n", 1, "header"),
        (b"TRT-8001-EntropyCalibration2\nx: 3c010204\ny 3c010204\n", 3, "expected"),
        (b"TRT-8001-EntropyCalibration2\nx: 3c01020\n", 2, "8 hex"),
        (b"TRT-8001-EntropyCalibration2\nx: 3c01020g\n", 2, "8 hex"),
        (b"TRT-8001-EntropyCalibration2\na: 3c010204\nb: 3c010204\na: 3c010204\n", 4, "twice"),
        (b"TRT-8001-EntropyCalibration2\na: 3c010204\n\xff\xfe: 00000000\n", 3, "not text"),
        (b"TRT-8001-EntropyCalibration2\n: 3c010204\n", 2, "expected"),
    ],
)
def test_corrupt_cache_errors_name_the_line(tmp_path, text, line, what):
    path = tmp_path / "bad.cache"
    path.write_bytes(text)
    with pytest.raises(CacheFormatError) as info:
        read_cache(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:") and what in message
    assert "\n" not in message


def test_missing_cache_and_unwritable_target(tmp_path):
    with pytest.raises(CacheFormatError, match="no such"):
        read_cache(tmp_path / "nope.cache")
    with pytest.raises(OutputError):
        write_cache(tmp_path / "missing-dir" / "x.cache", CalibrationCache(bits={"a": 1}))
    assert not (tmp_path / "missing-dir").exists()


def test_name_with_newline_is_refused():
    with pytest.raises(CacheFormatError):
        CalibrationCache.from_amax({"a\nb": 1.0}, version="8001")


def test_crlf_cache_reads_like_its_lf_twin(tmp_path):
    """A cache that went through a Windows checkout (CRLF) is the same cache, not a format error."""
    amax = {"input": 2.5, "conv1: out": 0.75, "relu/1": 1e-3}
    lf = CalibrationCache.from_amax(amax, version="8.6.1").to_bytes()
    crlf = tmp_path / "crlf.cache"
    crlf.write_bytes(lf.replace(b"\n", b"\r\n"))
    want = parse_cache(lf)
    got = read_cache(crlf)
    assert (
        (got.version, got.algorithm)
        == (want.version, want.algorithm)
        == ("8601", "EntropyCalibration2")
    )
    assert dict(got.bits) == dict(want.bits) and list(got.bits) == list(amax)
    assert got.to_bytes() == lf  # written back with LF, as TensorRT writes it


def test_header_version_without_tensorrt_is_the_default():
    """No `tensorrt` importable (TensorRT-RTX reads no INT8 caches): the documented default."""
    import importlib.util

    from onnx2trt_lib.calib.cache import DEFAULT_TRT_VERSION, installed_trt_version

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("full TensorRT is installed: the header follows it")
    assert installed_trt_version() is None
    cache = CalibrationCache.from_amax({"x": 1.27})
    assert cache.version == trt_version_number(DEFAULT_TRT_VERSION) == "100300"
    assert cache.to_bytes() == b"TRT-100300-EntropyCalibration2\nx: 3c23d70a\n"

"""Without TensorRT: version-compatible engines in the sidecar check and the loader, and the
timing-cache path checked before a build (fake runtimes and backends stand in for TensorRT)."""

from __future__ import annotations

import hashlib
import json
import logging
import types
from typing import ClassVar

import pytest

from onnx2trt_lib._io import OutputError
from onnx2trt_lib.build import BuildConfig, Builder, load_engine
from onnx2trt_lib.build import builder as builder_module
from onnx2trt_lib.build import engine as engine_module
from onnx2trt_lib.build.backends import Backend
from onnx2trt_lib.build.engine import (
    EngineFileError,
    check_sidecar,
    engine_from_bytes,
    inspect_engine,
)

TRT_10_13 = Backend("tensorrt", "tensorrt", "10.13.0.35")


def _sidecar(version: str, *, version_compatible: bool, name: str = "tensorrt") -> dict:
    return {
        "backend": {"name": name, "version": version},
        "config": {"version_compatible": version_compatible},
        "target": "ampere-plus",
    }


def test_version_compatible_engine_loads_in_the_same_or_a_later_tensorrt() -> None:
    assert check_sidecar(_sidecar("10.8.0.43", version_compatible=True), TRT_10_13) == []
    assert (
        check_sidecar(_sidecar("8.6.1.6", version_compatible=True), TRT_10_13) == []
    )  # later majors too
    newer = check_sidecar(_sidecar("10.14.1.48", version_compatible=True), TRT_10_13)
    assert newer == [
        (
            "built with tensorrt 10.14.1.48 as version-compatible but 10.13.0.35 is installed "
            "(version-compatible engines load only in the same or a later TensorRT)"
        )
    ]


def test_plain_engine_still_needs_the_exact_version() -> None:
    (problem,) = check_sidecar(_sidecar("10.8.0.43", version_compatible=False), TRT_10_13)
    assert "engines only load in the TensorRT version that built them" in problem
    rtx = Backend("tensorrt-rtx", "tensorrt_rtx", "1.7.1.116")
    (problem,) = check_sidecar(
        _sidecar("1.6.0.1", version_compatible=True, name="tensorrt-rtx"), rtx
    )
    assert (
        "only load in the TensorRT version that built them" in problem
    )  # RTX: never across releases


class _FakeRuntime:
    """trt.Runtime as far as engine_from_bytes goes; records the host-code flag at deserialization."""

    seen: ClassVar[list[bool]] = []

    def __init__(self, logger) -> None:
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, data: bytes):
        _FakeRuntime.seen.append(self.engine_host_code_allowed)
        return types.SimpleNamespace(create_execution_context=lambda: None)


@pytest.fixture
def fake_trt_backend(monkeypatch):
    """A Backend-shaped object for TensorRT 10.13 whose `trt` is a fake module (no TensorRT needed)."""
    monkeypatch.setattr(
        engine_module, "make_logger", lambda backend: types.SimpleNamespace(errors=[])
    )
    _FakeRuntime.seen = []
    trt = types.SimpleNamespace(Runtime=_FakeRuntime, __version__="10.13.0.35")
    return types.SimpleNamespace(
        name="tensorrt", version="10.13.0.35", label="TensorRT 10.13.0.35", trt=trt
    )


def test_host_code_is_allowed_only_when_asked(fake_trt_backend) -> None:
    engine_from_bytes(b"plan", fake_trt_backend)
    engine_from_bytes(b"plan", fake_trt_backend, host_code=True)
    assert _FakeRuntime.seen == [False, True]


def _write_engine(tmp_path, *, version: str, version_compatible: bool):
    data = b"ftrt" + bytes(100)
    path = tmp_path / "m.engine"
    path.write_bytes(data)
    side = {
        "format": "onnx2trt-engine",
        "format_version": 1,
        **_sidecar(version, version_compatible=version_compatible),
        "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]}],
        "profiles": [[{"name": "x", "min": [1, 3], "opt": [2, 3], "max": [4, 3]}]],
        "engine_sha256": hashlib.sha256(data).hexdigest(),
        "created": "2026-01-01T00:00:00+00:00",
    }
    (tmp_path / "m.engine.json").write_text(json.dumps(side))
    return path


def test_load_engine_accepts_an_older_version_compatible_engine_with_host_code(
    tmp_path, fake_trt_backend
) -> None:
    path = _write_engine(tmp_path, version="10.8.0.43", version_compatible=True)
    loaded = load_engine(path, fake_trt_backend, allow_host_code=True)
    assert loaded.sidecar["config"]["version_compatible"] is True and _FakeRuntime.seen == [True]
    plain = _write_engine(tmp_path, version="10.13.0.35", version_compatible=False)
    load_engine(plain, fake_trt_backend)
    assert _FakeRuntime.seen == [True, False]


def test_the_sidecar_alone_never_enables_host_code(tmp_path, fake_trt_backend) -> None:
    """`version_compatible: true` in a JSON file beside the engine is no opt-in (issue 17, #7)."""
    path = _write_engine(tmp_path, version="10.13.0.35", version_compatible=True)
    with pytest.raises(EngineFileError, match="--allow-host-code"):
        load_engine(path, fake_trt_backend)
    assert _FakeRuntime.seen == []


def test_inspect_does_not_run_an_engines_embedded_host_code(
    tmp_path, monkeypatch, fake_trt_backend
) -> None:
    path = _write_engine(tmp_path, version="10.8.0.43", version_compatible=True)
    monkeypatch.setattr(engine_module, "detect_backend", lambda name: fake_trt_backend)
    report = inspect_engine(path)
    assert report["problems"] == [] and _FakeRuntime.seen == []
    assert report["engine"]["loaded"] is False and "embeds host code" in report["engine"]["reason"]


def test_bad_timing_cache_path_fails_before_the_build(tmp_path, monkeypatch, build_calls) -> None:
    """Full TensorRT writes the timing cache after the build: its path is checked first, like the engine's."""
    monkeypatch.setattr(builder_module, "detect_backend", lambda name: TRT_10_13)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not parsed: the path check comes first")
    config = BuildConfig(timing_cache=str(tmp_path / "missing" / "t.cache"))
    with pytest.raises(OutputError, match="output folder .*missing does not exist"):
        Builder(config, cache_dir=False).build(model, tmp_path / "m.engine")
    with pytest.raises(OutputError, match="is a directory"):
        Builder(config.replace(timing_cache=str(tmp_path)), cache_dir=False).build(model)
    with pytest.raises(OutputError, match="same file as input"):
        Builder(config.replace(timing_cache=str(model)), cache_dir=False).build(model)
    assert build_calls == []


def test_timing_cache_write_failure_keeps_the_engine(tmp_path, caplog) -> None:
    trt_config = types.SimpleNamespace(
        get_timing_cache=lambda: types.SimpleNamespace(serialize=lambda: b"cache")
    )
    with caplog.at_level(logging.WARNING, logger="onnx2trt_lib.build.engine"):
        engine_module._save_timing_cache(
            trt_config, str(tmp_path / "gone" / "t.cache")
        )  # no exception
    assert "timing cache not saved" in caplog.text
    engine_module._save_timing_cache(trt_config, str(tmp_path / "t.cache"))
    assert (tmp_path / "t.cache").read_bytes() == b"cache"

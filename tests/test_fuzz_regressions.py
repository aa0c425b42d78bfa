"""Every finding of tools/fuzz.py, replayed: each input must now load or fail with the
library's own one-line error (an Onnx2TrtError), never another exception.

The inputs are minimal hand reductions of what the fuzzer recorded (see
benchmarks/results/fuzz.md for the runs); they go through the same target functions
the fuzzer drives, loaded from tools/fuzz.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

FUZZ = Path(__file__).resolve().parents[1] / "tools" / "fuzz.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("onnx2trt_fuzz_tool", FUZZ)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _replay(fuzz, target: str, data: bytes, tmp_path: Path) -> None:
    """Run `data` through the fuzz target; fail on anything but success or a one-line Onnx2TrtError."""
    from onnx2trt_lib.errors import Onnx2TrtError

    run = fuzz._make_target(target, tmp_path)
    try:
        run(data)
    except Onnx2TrtError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip(), f"multi-line error: {exc!r}"


def _engine_sidecar(**changes) -> bytes:
    doc = json.loads(_seed_engine_sidecar())
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


def _seed_engine_sidecar() -> str:
    return json.dumps(
        {
            "format": "onnx2trt-engine",
            "format_version": 1,
            "backend": {"name": "tensorrt-rtx", "version": "1.7.0", "module": "tensorrt_rtx"},
            "target": "portable",
            "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 1, 8, 8]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 10]}],
            "profiles": [
                [{"name": "x", "min": [1, 1, 8, 8], "opt": [1, 1, 8, 8], "max": [1, 1, 8, 8]}]
            ],
            "config": {"fp16": False, "int8": False},
            "onnx_sha256": "b" * 64,
            "onnx_source": "m.onnx",
            "engine_sha256": "c" * 64,
            "engine_size": 4,
            "created": "2026-01-01T00:00:00+00:00",
            "onnx2trt_lib_version": "0.1.0",
        }
    )


def _model_with_location(location: bytes) -> bytes:
    """A valid model whose initializer 'w' points at external data `location` (raw bytes, any content)."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(
        tensor, location="@" * len(location), offset=0, length=24
    )
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    return model.SerializeToString().replace(b"@" * len(location), location)


# (target, id, input): one row per distinct finding (exception type + library line) of the fuzz runs
FINDINGS: list[tuple[str, str, bytes]] = [
    # calib/sidecar.py read_sidecar: json.loads raised RecursionError (not ValueError) on deep nesting
    ("calib-sidecar", "deep-nesting-recursion", b"[" * 100_000),
    ("calib-sidecar", "deep-nesting-object", b'{"a":' * 50_000),
    # build/engine.py read_sidecar: the same RecursionError
    ("engine-sidecar", "deep-nesting-recursion", b"[" * 100_000),
    # build/engine.py inspection_lines/check_sidecar trusted the sidecar's structure
    (
        "engine-sidecar",
        "profile-range-without-max",
        _engine_sidecar(profiles=[[{"name": "x", "min": [1], "opt": [1]}]]),
    ),
    ("engine-sidecar", "profile-not-a-list-of-dicts", _engine_sidecar(profiles=[[[1, 2, 3]]])),
    (
        "engine-sidecar",
        "input-without-shape",
        _engine_sidecar(inputs=[{"name": "x", "dtype": "float32"}]),
    ),
    (
        "engine-sidecar",
        "input-without-name",
        _engine_sidecar(inputs=[{"naie": "x", "dtype": "float32", "shape": [1]}]),
    ),
    (
        "engine-sidecar",
        "shape-holds-a-dict",
        _engine_sidecar(inputs=[{"name": "x", "dtype": "float32", "shape": [{}]}]),
    ),
    ("engine-sidecar", "inputs-an-int", _engine_sidecar(inputs=4)),
    ("engine-sidecar", "outputs-list-of-lists", _engine_sidecar(outputs=[[1, 2]])),
    ("engine-sidecar", "inputs-not-a-list", _engine_sidecar(inputs="x")),
    ("engine-sidecar", "backend-not-a-dict", _engine_sidecar(backend=["tensorrt-rtx", "1.7"])),
    ("engine-sidecar", "config-not-a-dict", _engine_sidecar(config=7)),
    # _io.py load_model: external-data location that is not UTF-8 (protobuf hands back bytes) -> TypeError
    ("model", "location-not-utf8", _model_with_location(b"w\xff.bin")),
    # _io.py load_model: location with a NUL byte -> ValueError from Path.resolve
    ("model", "location-nul-byte", _model_with_location(b"w\x00.bin")),
    # _io.py load_model: an external tensor whose *name* is not UTF-8 made onnx's loader fail with a
    # several-line pybind11 message, copied whole into the ModelLoadError
    (
        "model",
        "tensor-name-not-utf8",
        _model_with_location(b"w.bin").replace(b"B\x01w", b"B\x01\xfe"),
    ),
    ("model", "location-is-a-folder", _model_with_location(b".")),
]


@pytest.mark.parametrize(
    ("target", "data"), [(t, d) for t, _, d in FINDINGS], ids=[f"{t}-{i}" for t, i, _ in FINDINGS]
)
def test_fuzz_finding_is_fixed(fuzz, target: str, data: bytes, tmp_path: Path) -> None:
    _replay(fuzz, target, data, tmp_path)


@pytest.mark.parametrize("target", ["cache", "calib-sidecar", "engine-sidecar", "model"])
def test_fuzz_seeds_load(fuzz, target: str, tmp_path: Path) -> None:
    """The first seed is a valid input (a target that refused it would fuzz nothing); none may crash."""
    from onnx2trt_lib.errors import Onnx2TrtError

    seeds = fuzz._seeds(target)
    try:
        fuzz._make_target(target, tmp_path)(seeds[0])
    except Onnx2TrtError as exc:
        pytest.fail(f"{target}: the well-formed seed is refused: {exc}")
    for seed in seeds[1:]:
        _replay(fuzz, target, seed, tmp_path)


def test_recorder_flags_unexpected_exceptions(fuzz, tmp_path: Path) -> None:
    """The fuzz harness itself: a non-library exception is a finding, a library error is not."""
    from onnx2trt_lib.errors import CacheFormatError

    recorder = fuzz.Recorder("selftest", tmp_path / "findings.jsonl")

    def library_error(_data: bytes) -> None:
        raise CacheFormatError("x.cache:1: bad")

    def bug(_data: bytes) -> None:
        raise KeyError("boom")

    recorder(library_error, b"a")
    assert recorder.seen == {}
    recorder(bug, b"b")
    recorder(bug, b"c")
    assert list(recorder.seen.values()) == [2]
    lines = (tmp_path / "findings.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["type"] == "KeyError"

"""A model past protobuf's 2 GiB (weights in external data) through lint, fix, fp16 and build.

protobuf cannot serialise a message over 2 GiB, and onnx's shape inference, checker and
`ModelProto.ByteSize()` all serialise the model behind the scenes: before, each of these
commands ended in an EncodeError traceback on such a model. The model is generated here (eight
8192x8192 float32 MatMul weights, 2 GiB, written block by block so the test never holds
them in memory), each command runs in its own process (peak memory is the command's, and a
traceback would show on stderr), and the outputs are checked against the original weights
read through np.memmap, slice by slice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

N = 8192  # one weight: 256 MiB of float32
LAYERS = 8  # 2 GiB in all: past protobuf's 2 GiB - 1 limit
BLOCK = 1024  # rows generated at a time
NEEDED_DISK = 10 << 30  # model 2 + fixed 2 + fp16 1 + engine 2 GiB, and slack
NEEDED_MEMORY = 9 << 30  # the build peaks near 7.3 GB (parser weights + engine)


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _write_model(folder: Path) -> Path:
    """The model and its one data file; weights are a random block, scaled per block."""
    rng = np.random.default_rng(0)
    block = rng.standard_normal((BLOCK, N), dtype=np.float32) / np.float32(np.sqrt(N))
    data_name = "model.onnx.data"
    weights, nodes = [], []
    previous = "x"
    with open(folder / data_name, "wb") as data:
        for layer in range(LAYERS):
            offset = data.tell()
            for start in range(0, N, BLOCK):
                data.write((block * np.float32(1 + 0.01 * (layer + start / N))).tobytes())
            tensor = TensorProto(name=f"w{layer}", data_type=TensorProto.FLOAT, dims=[N, N])
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", offset), ("length", N * N * 4)):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            weights.append(tensor)
            act = "Relu" if layer < LAYERS - 1 else "Identity"
            nodes.append(helper.make_node("MatMul", [previous, f"w{layer}"], [f"m{layer}"]))
            nodes.append(helper.make_node(act, [f"m{layer}"], [f"y{layer}"]))
            previous = f"y{layer}"
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, N])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _weight(model_path: Path, name: str) -> np.ndarray:
    """A weight of a saved model, memory-mapped from its external data (read only)."""
    proto = onnx.load(str(model_path), load_external_data=False)
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    assert tensor.data_location == TensorProto.EXTERNAL, f"{name} is not external"
    entries = {e.key: e.value for e in tensor.external_data}
    location = model_path.parent / entries["location"]
    assert location.parent == model_path.parent
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    return np.memmap(
        location,
        dtype=dtype,
        mode="r",
        offset=int(entries.get("offset", 0)),
        shape=tuple(tensor.dims),
    )


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "onnx2trt_lib.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc.stdout


@pytest.fixture
def big_folder(tmp_path: Path):
    """tmp_path, emptied afterwards (pass or fail): pytest keeps the last runs' folders, and
    these hold about 6 GiB."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_a_model_past_2_gib_goes_through_lint_fix_fp16_and_build(big_folder: Path) -> None:
    tmp_path = big_folder
    pytest.importorskip("tensorrt_rtx", reason="build needs TensorRT-RTX (its builder runs on CPU)")
    if shutil.disk_usage(tmp_path).free < NEEDED_DISK:
        pytest.skip(f"needs {NEEDED_DISK >> 30} GiB free on {tmp_path}'s disk")
    if _available_memory() < NEEDED_MEMORY:
        pytest.skip(f"needs {NEEDED_MEMORY >> 30} GiB of available memory")
    model = _write_model(tmp_path)
    data = tmp_path / "model.onnx.data"
    assert data.stat().st_size > 2**31 - 1  # past protobuf's limit (2 GiB - 1)
    before = (model.read_bytes(), data.stat().st_size, data.stat().st_mtime_ns)
    original = _weight(model, "w0")

    out = _ok(_cli("lint", "model.onnx", "--target", "tensorrt-rtx", cwd=tmp_path))
    assert "nothing tensorrt-rtx refuses" in out

    # fix: still past 2 GiB, so written as model + one data file, the same weights
    _ok(_cli("fix", "model.onnx", "-o", "fixed.onnx", "--target", "tensorrt-rtx", cwd=tmp_path))
    fixed = tmp_path / "fixed.onnx"
    assert fixed.stat().st_size < 1 << 20 and (tmp_path / "fixed.onnx.data").is_file()
    onnx.checker.check_model(str(fixed))  # onnx's checker reads the file and its data
    for name in ("w0", f"w{LAYERS - 1}"):
        mine, theirs = _weight(fixed, name), _weight(model, name)
        for rows in (slice(0, 4), slice(N // 2, N // 2 + 4), slice(N - 4, N)):
            np.testing.assert_array_equal(mine[rows], theirs[rows])
    (tmp_path / "fixed.onnx.data").unlink()  # disk: the next outputs need the room

    # fp16: 1.1 GiB, under the limit, so one file; its weights are the original's in float16
    _ok(_cli("fp16", "model.onnx", "-o", "half.onnx", cwd=tmp_path))
    half = onnx.load(str(tmp_path / "half.onnx"))
    weight = next(t for t in half.graph.initializer if t.name.startswith("w0"))
    values = numpy_helper.to_array(weight)
    assert values.dtype == np.float16 and values.shape == (N, N)
    for rows in (slice(0, 4), slice(N - 4, N)):
        np.testing.assert_array_equal(values[rows], original[rows].astype(np.float16))
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [TensorProto.FLOAT]
    del half, values, weight
    (tmp_path / "half.onnx").unlink()

    # build: TensorRT-RTX reads the weights from the model's folder (parse_from_file)
    out = _ok(
        _cli("build", "model.onnx", "--backend", "tensorrt-rtx", "-o", "big.engine", cwd=tmp_path)
    )
    engine = tmp_path / "big.engine"
    assert engine.stat().st_size >= data.stat().st_size  # the weights are in it
    sidecar = json.loads((tmp_path / "big.engine.json").read_text())
    assert sidecar["inputs"][0]["shape"] == [1, N], sidecar
    assert "1x8192" in out

    # the input is untouched and no temp file is left
    assert (model.read_bytes(), data.stat().st_size, data.stat().st_mtime_ns) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---- the same code paths on small models, the 2 GiB threshold lowered (fast, every run)


def _matmul_model(n: int = 64, layers: int = 3) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    weights = [
        numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32) / 8, f"w{i}")
        for i in range(layers)
    ]
    nodes, previous = [], "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"y{i}"]))
        previous = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, n])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def small_limit(monkeypatch):
    """Models over 20 KB count as past protobuf's limit; tensors over 1 KB are left out of
    inference copies."""
    from onnx2trt_lib import _weights

    monkeypatch.setattr(_weights, "LARGE_MODEL", 20_000)
    monkeypatch.setattr(_weights, "BIG_TENSOR", 1024)
    return _weights


def test_fp16_output_past_the_limit_is_written_with_external_data(tmp_path, small_limit) -> None:
    """An FP16 copy still past 2 GiB (a model over 4 GiB) is saved as OUT.onnx + OUT.onnx.data,
    published as one set, with the same values as a plain float16 conversion."""
    from onnx2trt_lib.quant.api import to_fp16

    model = _matmul_model(n=128)  # 3 x 64 KiB float32: 96 KiB of float16, over the 20 KB limit
    onnx.save(model, str(tmp_path / "m.onnx"))
    to_fp16(tmp_path / "m.onnx", output=tmp_path / "h.onnx")
    data = tmp_path / "h.onnx.data"
    assert data.is_file() and (tmp_path / "h.onnx").stat().st_size < 4096
    stored = onnx.load(str(tmp_path / "h.onnx"), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)
    loaded = onnx.load(str(tmp_path / "h.onnx"))
    values = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}
    for tensor in model.graph.initializer:
        half = next(v for k, v in values.items() if k.startswith(tensor.name))
        np.testing.assert_array_equal(half, numpy_helper.to_array(tensor).astype(np.float16))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_skeleton_holds_no_weight_and_leaves_the_model_alone(small_limit) -> None:
    model = _matmul_model()
    before = model.SerializeToString()
    skeleton = small_limit.skeleton(model)
    assert model.SerializeToString() == before
    assert all(
        t.data_location == TensorProto.EXTERNAL and not t.raw_data
        for t in skeleton.graph.initializer
    )
    assert [list(t.dims) for t in skeleton.graph.initializer] == [[64, 64]] * 3
    inferred = small_limit.infer_shapes(model, strict_mode=True)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in inferred.graph.value_info
    }
    assert shapes == {"y0": [1, 64], "y1": [1, 64]}


def test_sha256_of_a_large_model_covers_its_weights(small_limit) -> None:
    from onnx2trt_lib._io import sha256_model

    model = _matmul_model()
    first = sha256_model(model)
    assert first == sha256_model(_matmul_model())
    changed = _matmul_model()
    raw = bytearray(changed.graph.initializer[1].raw_data)
    raw[100] ^= 1
    changed.graph.initializer[1].raw_data = bytes(raw)
    assert sha256_model(changed) != first


def test_a_rewritten_model_past_the_limit_is_parsed_from_a_file(tmp_path, small_limit) -> None:
    """build --fp16 on a strongly typed backend rewrites the model; past 2 GiB there are no
    bytes to hand the parser, so it is saved with external data and parsed from that file."""
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX's parser (runs on CPU)")
    from onnx2trt_lib._io import output_set
    from onnx2trt_lib.build import network as network_module
    from onnx2trt_lib.build.config import BuildConfig
    from onnx2trt_lib.build.network import network_from_onnx

    onnx.save(_matmul_model(n=128), str(tmp_path / "m.onnx"))
    saved = []
    real = network_module.save_model

    def recording(model, path, **kwargs):
        saved.append((Path(path), kwargs))
        real(model, path, **kwargs)
        assert Path(path).with_name(Path(path).name + ".data").is_file()

    network_module.save_model = recording
    try:
        with output_set():  # as in `build`: the scratch copy must not wait for the set
            parsed = network_from_onnx(
                tmp_path / "m.onnx", "tensorrt-rtx", config=BuildConfig(fp16=True)
            )
    finally:
        network_module.save_model = real
    assert saved and saved[0][1] == {"external_data": True}
    assert not saved[0][0].parent.exists()  # the private folder is gone after parsing
    assert parsed.network.num_layers >= 3
    assert [t.dtype for t in parsed.inputs] == ["float32"]


def test_onnx_runtime_gets_a_large_in_memory_model_as_a_file(tmp_path, small_limit) -> None:
    """A loaded model past 2 GiB cannot go to ONNX Runtime as bytes: it is saved to a private
    folder with external data, at once, even inside a command's output set."""
    from onnx2trt_lib._io import output_set
    from onnx2trt_lib.runtime.ort_runner import OrtRunner

    model = _matmul_model()
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    expected = x
    for tensor in model.graph.initializer:
        expected = expected @ numpy_helper.to_array(tensor)
    with output_set():
        runner = OrtRunner(model)
        (out,) = runner.infer({"x": x}).values()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

"""Hostile inputs and bad luck (issue 17): each finding of the adversarial pass, reproduced small.

Every test generates its inputs and fails on the code before the fix: a leak through an
external location nobody checked, an output that overwrites an input's weights, Ghostscript
started by a disguised image, a stale or foreign cache hit, host code enabled by a sidecar.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import conv_relu_model
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib._io import load_model
from onnx2trt_lib.cli.main import cli
from onnx2trt_lib.errors import ModelLoadError

SECRET = np.array([1e6, 2e6, 3e6, 4e6], np.float32)


def _external_tensor(name: str, location: str, dims: list[int]) -> onnx.TensorProto:
    tensor = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    tensor.raw_data = bytes(4 * int(np.prod(dims)))
    onnx.external_data_helper.set_external_data(tensor, location=location, offset=0, length=16)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    return tensor


def _sparse_model(folder: Path, location: str) -> Path:
    """conv_relu_model whose bias part 'b1' is a sparse initializer with external values."""
    model = conv_relu_model()
    b1 = next(t for t in model.graph.initializer if t.name == "b1")
    model.graph.initializer.remove(b1)
    values = _external_tensor("b1", location, [4])
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "b1_idx")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _sparse_constant_model(folder: Path, location: str) -> Path:
    """b1 from a Constant node's sparse_value attribute, inside an If branch (a subgraph)."""
    model = conv_relu_model()
    b1 = next(t for t in model.graph.initializer if t.name == "b1")
    model.graph.initializer.remove(b1)
    values = _external_tensor("b1v", location, [4])
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "b1_idx")
    const = helper.make_node(
        "Constant", [], ["b1_then"], sparse_value=helper.make_sparse_tensor(values, indices, [4])
    )
    out = [helper.make_tensor_value_info("b1_then", TensorProto.FLOAT, [4])]
    then_g = helper.make_graph([const], "then", [], out)
    else_c = helper.make_node(
        "Constant", [], ["b1_else"], value=numpy_helper.from_array(np.zeros(4, np.float32))
    )
    else_g = helper.make_graph(
        [else_c], "else", [], [helper.make_tensor_value_info("b1_else", TensorProto.FLOAT, [4])]
    )
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    model.graph.node.insert(
        0, helper.make_node("If", ["cond"], ["b1"], then_branch=then_g, else_branch=else_g)
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=True)


# ---------------------------------------------------------------- 1: one model-loading gate


@pytest.mark.parametrize("builder", [_sparse_model, _sparse_constant_model])
def test_every_external_location_is_checked(tmp_path: Path, builder) -> None:
    """Sparse initializers and sparse attributes in subgraphs escape no more than initializers."""
    (tmp_path / "secret.bin").write_bytes(SECRET.tobytes())
    path = builder(tmp_path / "model", "../secret.bin")
    with pytest.raises(ModelLoadError, match="escapes the model folder"):
        load_model(path, check=False)


def test_calibrate_cannot_read_a_file_from_the_working_directory(
    tmp_path: Path, monkeypatch
) -> None:
    """The leak: a relative location that is not beside the model resolved against the CWD."""
    monkeypatch.chdir(tmp_path)
    Path("secret.bin").write_bytes(SECRET.tobytes())
    _sparse_model(Path("model"), "secret.bin")
    np.save("data.npy", np.random.default_rng(0).random((4, 3, 8, 8), np.float32))
    result = _invoke(["calibrate", "model/m.onnx", "--data", "data.npy", "-o", "c.cache"])
    assert result.exit_code == 1, result.output
    assert "not found beside the model" in result.output
    assert not Path("c.cache").exists()
    lint = _invoke(["lint", "model/m.onnx"])
    assert lint.exit_code == 1 and "secret.bin" in lint.output


def test_sparse_external_data_beside_the_model_loads(tmp_path: Path) -> None:
    """Not a blanket refusal: a sparse tensor whose data is beside the model is read into the proto."""
    folder = tmp_path / "model"
    path = _sparse_model(folder, "b1.bin")
    (folder / "b1.bin").write_bytes(SECRET.tobytes())
    model = load_model(path)
    assert model.graph.sparse_initializer[0].values.data_location != TensorProto.EXTERNAL
    sparse = model.graph.sparse_initializer[0].values
    np.testing.assert_array_equal(numpy_helper.to_array(sparse), SECRET)
    from onnx2trt_lib.runtime.ort_runner import OrtRunner

    x = np.zeros((1, 3, 8, 8), np.float32)
    got = OrtRunner(path).infer({"x": x})["y"]
    bias = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "b0"))
    np.testing.assert_allclose(got[0, :, 0, 0], np.maximum(bias + SECRET, 0), rtol=1e-6)


def test_in_memory_model_with_external_references_is_refused() -> None:
    model = conv_relu_model()
    w = next(t for t in model.graph.initializer if t.name == "b1")
    onnx.external_data_helper.set_external_data(w, location="w.bin", offset=0, length=16)
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    with pytest.raises(ModelLoadError, match="external data"):
        load_model(model, check=False)


if sys.platform == "win32":  # pragma: no cover
    pytest.skip("POSIX file semantics", allow_module_level=True)
_ = os


# ---------------------------------------------------------------- 2: one output gate


def _external_model(folder: Path) -> tuple[Path, Path]:
    """conv_relu_model with its weights in m.weights beside m.onnx."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    onnx.save(
        conv_relu_model(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.weights",
        size_threshold=0,
    )
    return path, folder / "m.weights"


def _cache_for(model: Path, folder: Path) -> Path:
    data = folder / "data.npy"
    np.save(data, np.random.default_rng(0).random((4, 3, 8, 8), np.float32))
    cache = folder / "c.cache"
    result = _invoke(["calibrate", str(model), "--data", str(data), "-o", str(cache)])
    assert result.exit_code == 0, result.output
    return cache


@pytest.mark.parametrize("command", ["fix-o", "fix-report", "fp16", "quantize", "run"])
def test_no_command_overwrites_the_input_external_weights(tmp_path: Path, command: str) -> None:
    model, weights = _external_model(tmp_path)
    before = weights.read_bytes()
    args = {
        "fix-o": ["fix", str(model), "-o", str(weights)],
        "fix-report": ["fix", str(model), "-o", str(tmp_path / "f.onnx"), "--report", str(weights)],
        "fp16": ["fp16", str(model), "-o", str(weights)],
        "quantize": [
            "quantize",
            str(model),
            "--cache",
            str(_cache_for(model, tmp_path)) if command == "quantize" else "",
            "--no-protect",
            "-o",
            str(weights),
        ],
        "run": ["run", str(model), "-n", "1", "--warmup", "0", "-o", str(weights)],
    }[command]
    result = _invoke(args)
    assert result.exit_code != 0, result.output
    assert "external data" in result.output
    assert weights.read_bytes() == before
    assert not (tmp_path / "f.onnx").exists()


def test_output_gate_sees_hard_links_and_other_outputs(tmp_path: Path) -> None:
    from onnx2trt_lib._io import OutputError, check_output_path

    model, weights = _external_model(tmp_path)
    os.link(weights, tmp_path / "alias.bin")
    with pytest.raises(OutputError, match="external data"):
        check_output_path(tmp_path / "alias.bin", inputs=(model,))
    with pytest.raises(OutputError, match="same file"):
        check_output_path(tmp_path / "a.onnx", outputs=(tmp_path / "b" / ".." / "a.onnx",))
    # save_model's .data beside the output may not be an input's weights either
    os.link(weights, tmp_path / "big.onnx.data")
    with pytest.raises(OutputError, match="external data"):
        check_output_path(tmp_path / "big.onnx", inputs=(model,))


# ---------------------------------------------------------------- 3: images by an allow-list

EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 8
newpath 0 0 moveto 8 8 lineto stroke
showpage
"""


def _one_input_model(folder: Path) -> Path:
    path = folder / "m.onnx"
    onnx.save(conv_relu_model(), str(path))
    return path


@pytest.mark.parametrize("command", ["calibrate", "compare"])
def test_a_disguised_eps_never_starts_ghostscript(tmp_path: Path, monkeypatch, command) -> None:
    from PIL import EpsImagePlugin

    started: list[object] = []

    def ghostscript(*args, **kwargs):
        started.append(args)
        raise OSError("Ghostscript must not run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    model = _one_input_model(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    (images / "cat.png").write_bytes(EPS)
    args = {
        "calibrate": ["calibrate", str(model), "--data", str(images), "-o", str(tmp_path / "c")],
        "compare": ["compare", str(model), str(model), "--data", str(images), "-p", "imagenet"],
    }[command]
    result = _invoke(args)
    assert result.exit_code != 0
    assert "allowed format" in result.output, result.output
    assert started == []


def test_an_image_declaring_gigapixels_is_refused_before_decoding(tmp_path: Path) -> None:
    import zlib

    from onnx2trt_lib.calib.dataset import open_image
    from onnx2trt_lib.errors import CalibrationError

    # a valid PNG header for 9000x9000 RGB with almost no data: decoding would take 243 MB
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = (9000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    with pytest.raises(CalibrationError, match="pixel limit"):
        open_image(path)


# ---------------------------------------------------------------- 5: engine keys by data content


def _png(path: Path, value: int) -> None:
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_int8_engine_key_follows_the_listed_images_bytes(tmp_path: Path) -> None:
    import types

    from onnx2trt_lib.build import BuildConfig
    from onnx2trt_lib.build.cache import cache_key

    backend = types.SimpleNamespace(name="tensorrt-rtx", version="1.0")
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    for index, image in enumerate(images):
        _png(image, 10 + index)
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\nb.png\n")
    config = BuildConfig(int8=True, calibration_data=str(listing))
    before = cache_key("onnx", config, backend)
    assert cache_key("onnx", config, backend) == before
    _png(images[1], 200)  # every image changes, the list file does not
    assert cache_key("onnx", config, backend) != before
    folder_config = BuildConfig(int8=True, calibration_data=str(tmp_path))
    folder_before = cache_key("onnx", folder_config, backend)
    _png(images[0], 99)
    os.utime(images[0], (0, 0))  # same name, size and an old mtime: only the bytes differ
    assert cache_key("onnx", folder_config, backend) != folder_before


# ---------------------------------------------------------------- 4, 6: outputs as a set


def test_interrupt_while_the_sidecar_is_written_keeps_the_previous_pair(
    tmp_path: Path, monkeypatch
) -> None:
    from onnx2trt_lib import _io
    from onnx2trt_lib.build import engine as engine_module

    target = tmp_path / "m.engine"
    engine_module.save_engine(target, b"old engine", {"engine": "old"})
    real = _io.atomic_write

    def interrupted(path, mode="wb"):
        if str(path).endswith(".json"):
            raise KeyboardInterrupt
        return real(path, mode)

    monkeypatch.setattr(engine_module, "write_text_atomic", lambda p, t: interrupted(p))
    with pytest.raises(KeyboardInterrupt):
        engine_module.save_engine(target, b"new engine", {"engine": "new"})
    assert target.read_bytes() == b"old engine"
    assert '"old"' in (tmp_path / "m.engine.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]


def test_output_set_is_all_or_none(tmp_path: Path) -> None:
    from onnx2trt_lib._io import output_set, write_bytes_atomic, written_path

    a, b = tmp_path / "a", tmp_path / "b"
    write_bytes_atomic(a, b"A0")
    with pytest.raises(RuntimeError), output_set():
        write_bytes_atomic(a, b"A1")
        assert a.read_bytes() == b"A0" and written_path(a).read_bytes() == b"A1"
        write_bytes_atomic(b, b"B1")
        raise RuntimeError("disk full")
    assert a.read_bytes() == b"A0" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    with output_set():
        write_bytes_atomic(a, b"A2")
        write_bytes_atomic(b, b"B2")
    assert (a.read_bytes(), b.read_bytes()) == (b"A2", b"B2")


def test_temps_of_a_killed_run_go_with_the_next_run(tmp_path: Path) -> None:
    import subprocess

    from onnx2trt_lib._io import _temp_prefix, check_output_path

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = int(dead.stdout)
    target = tmp_path / "c.cache"
    prefix = _temp_prefix(target).replace(f"~{os.getpid()}.", f"~{pid}.")
    left = tmp_path / f"{prefix}abc.tmp"
    left.write_bytes(b"torn")
    mine = tmp_path / f"{_temp_prefix(target)}def.tmp"  # a live writer: this process
    mine.write_bytes(b"writing")
    check_output_path(target)  # the start of the next run, even one that ends as a cache hit
    assert not left.exists() and mine.exists()


def test_a_concurrent_cache_write_never_becomes_a_hit(tmp_path: Path, monkeypatch) -> None:
    """Run B replaces the cache while run A is between its cache and its sidecar: the sidecar
    must describe A's bytes, so a later hit serves A's ranges (or recomputes), never B's."""
    import threading

    from onnx2trt_lib.calib import api as calib_api
    from onnx2trt_lib.calib.api import calibrate
    from onnx2trt_lib.calib.cache import CalibrationCache, read_cache, write_cache

    model = tmp_path / "m.onnx"
    onnx.save(conv_relu_model(), str(model))
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(1).random((4, 3, 8, 8), np.float32))
    output = tmp_path / "c.cache"
    foreign = CalibrationCache.from_amax(
        {"x": 123.0, "bias": 5.0, "c": 7.0, "y": 7.0}, version="10.3.0"
    )
    real = calib_api.write_cache

    def racing(path, cache):
        real(path, cache)  # A's cache
        other = threading.Thread(target=write_cache, args=(path, foreign))  # B, its own context
        other.start()
        other.join()

    monkeypatch.setattr(calib_api, "write_cache", racing)
    first = calibrate(str(model), str(data), output=str(output))
    monkeypatch.setattr(calib_api, "write_cache", real)
    again = calibrate(str(model), str(data), output=str(output))
    if again.cache_hit:
        assert again.amax == pytest.approx(first.amax)
        assert read_cache(output).amax == pytest.approx(first.amax)
    assert again.amax["x"] != pytest.approx(123.0)


def test_failed_calibrate_leaves_no_output(tmp_path: Path, monkeypatch) -> None:
    """A failure after the cache is written (here: the sidecar) publishes nothing at all."""
    from onnx2trt_lib.calib import api as calib_api

    model = tmp_path / "m.onnx"
    onnx.save(conv_relu_model(), str(model))
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(1).random((4, 3, 8, 8), np.float32))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(calib_api, "write_sidecar", full_disk)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _invoke(
        [
            "calibrate",
            str(model),
            "--data",
            str(data),
            "-o",
            str(tmp_path / "c.cache"),
            "--ranges",
            str(tmp_path / "r.json"),
            "--qdq",
            str(tmp_path / "q.onnx"),
        ]
    )
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unusable_plots_folder_fails_before_calibrating(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    from onnx2trt_lib.calib import api as calib_api

    model = tmp_path / "m.onnx"
    onnx.save(conv_relu_model(), str(model))
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(1).random((4, 3, 8, 8), np.float32))
    plots = tmp_path / "plots"
    if os.geteuid() == 0:  # root writes into read-only folders: a file where a parent goes
        plots.write_text("not a folder")
        plots = plots / "sub"
    else:
        plots.mkdir(mode=0o555)
    monkeypatch.setattr(calib_api, "collect", lambda *a, **k: pytest.fail("calibrated first"))
    result = _invoke(
        [
            "calibrate",
            str(model),
            "--data",
            str(data),
            "-o",
            str(tmp_path / "c"),
            "--plots",
            str(plots),
        ]
    )
    assert result.exit_code != 0 and "output folder" in result.output, result.output
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------- 8-9: one line, bounded reads


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _string_model(path: Path) -> Path:
    s = helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Identity", ["s"], ["t"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("t", TensorProto.STRING, [2]),
        ],
        initializer=[s],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _one_line_error(result, *says: str) -> None:
    assert result.exit_code in (1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for word in says:
        assert word in lines[0], result.output


def test_string_initializer_is_one_line(tmp_path: Path) -> None:
    model = _string_model(tmp_path / "s.onnx")
    result = _invoke(["fix", str(model), "-o", str(tmp_path / "o.onnx")])
    _one_line_error(result, "strings")
    assert not (tmp_path / "o.onnx").exists()


def test_fp16_keeps_a_string_initializer_as_it_is(tmp_path: Path) -> None:
    """fp16 leaves non-float weights in their TensorProto (it no longer loads every weight
    into numpy, which a 2 GiB model cannot afford), so strings pass through unchanged."""
    model = _string_model(tmp_path / "s.onnx")
    result = _invoke(["fp16", str(model), "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 0, result.output
    out = onnx.load(str(tmp_path / "o.onnx"))
    onnx.checker.check_model(out, full_check=True)
    strings = [t for t in out.graph.initializer if t.data_type == TensorProto.STRING]
    assert [(t.name, list(t.string_data)) for t in strings] == [("s", [b"a", b"b"])]


def test_huge_static_input_is_refused_before_allocating(tmp_path: Path) -> None:
    dims = [100000, 100000, 100]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    model = _save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "h.onnx"
    )
    _one_line_error(_invoke(["run", str(model)]), "100000x100000x100", "limit")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("role", ["model", "cache", "list", "npz", "state"])
def test_a_fifo_as_any_input_fails_at_once(tmp_path: Path, role: str) -> None:
    import subprocess

    fifo = (
        tmp_path
        / {
            "model": "f.onnx",
            "cache": "f.cache",
            "list": "f.txt",
            "npz": "f.npz",
            "state": "f.state.npz",
        }[role]
    )
    os.mkfifo(fifo)
    model = _one_input_model(tmp_path)
    data = tmp_path / "d.npy"
    np.save(data, np.zeros((2, 3, 8, 8), np.float32))
    args = {
        "model": ["lint", str(fifo)],
        "cache": ["quantize", str(model), "--cache", str(fifo), "-o", str(tmp_path / "q.onnx")],
        "list": ["calibrate", str(model), "--data", str(fifo), "-o", str(tmp_path / "c")],
        "npz": ["run", str(model), "--input", str(fifo)],
        "state": [
            "calibrate",
            str(model),
            "--data",
            str(data),
            "--add-state",
            str(fifo),
            "-o",
            str(tmp_path / "c"),
        ],
    }[role]
    proc = subprocess.run(
        [sys.executable, "-m", "onnx2trt_lib.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )  # a hang would end the test with TimeoutExpired
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "regular file" in proc.stderr or "not a file" in proc.stderr.lower(), proc.stderr


def test_list_file_linked_to_dev_zero_is_refused(tmp_path: Path) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    model = _one_input_model(tmp_path)
    (tmp_path / "list.txt").symlink_to("/dev/zero")
    result = _invoke(
        ["calibrate", str(model), "--data", str(tmp_path / "list.txt"), "-o", str(tmp_path / "c")]
    )
    _one_line_error(result, "regular file")


def test_npz_zip_bomb_is_refused_from_declared_sizes(tmp_path: Path, monkeypatch) -> None:
    import zipfile

    from onnx2trt_lib import _io

    monkeypatch.setattr(_io, "memory_limit", lambda: 64 * 2**20)
    bomb = tmp_path / "bomb.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(0, np.uint8))
    header["shape"] = (200 * 2**20,)
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            zeros = bytes(2**20)
            for _ in range(200):
                member.write(zeros)
    assert bomb.stat().st_size < 2**20
    model = _one_input_model(tmp_path)
    _one_line_error(_invoke(["run", str(model), "--input", str(bomb)]), "limit")


def test_folding_never_evaluates_a_huge_constant_of_shape(tmp_path: Path) -> None:
    import resource

    shape = numpy_helper.from_array(np.array([100000, 100000], np.int64), "shp")
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["shp"], ["big"]),
            helper.make_node("ReduceSum", ["big"], ["r"], keepdims=0),
            helper.make_node("Add", ["x", "r"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        initializer=[shape],
    )
    model = _save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "c.onnx"
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = _invoke(["fix", str(model), "-o", str(tmp_path / "o.onnx")])
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.exit_code == 0, result.output
    assert grown_mib < 1000  # 40 GB were asked for before (an error, or the OOM killer)
    kept = onnx.load(str(tmp_path / "o.onnx"))
    assert [n.op_type for n in kept.graph.node][0] == "ConstantOfShape"


def test_onnx_runtime_log_lines_stay_out_of_errors(tmp_path: Path) -> None:
    import subprocess

    data = numpy_helper.from_array(np.ones(6, np.float32), "d")
    shp = numpy_helper.from_array(np.array([4, 4], np.int64), "s")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["d", "s"], ["r"]),
            helper.make_node("Add", ["x", "r"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
        initializer=[data, shp],
    )
    model = _save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "b.onnx"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnx2trt_lib.cli.main",
            "fix",
            str(model),
            "-o",
            str(tmp_path / "o.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---------------------------------------------------------------- 12-13: what reaches the terminal

TITLE = "\x1b]0;pwned\x07evil\x1b[2K\x9b31m"


def test_names_are_escaped_before_printing(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y", "idx"], name=TITLE, kernel_shape=[2, 2])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 1, 3, 3]),
        ],
    )
    model = _save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "e.onnx"
    )
    result = _invoke(["lint", str(model), "--target", "tensorrt-rtx"])
    assert result.exit_code == 3, result.output
    assert "evil" in result.output
    assert (
        "\x1b" not in result.output and "\x07" not in result.output and "\x9b" not in result.output
    )
    assert "\\x1b]0;pwned" in result.output
    ranges = tmp_path / "r.json"
    ranges.write_text(
        '{"format": "onnx2trt-ranges/1", "tensors": {"'
        + TITLE.encode("unicode_escape").decode().replace("\\x", "\\u00")
        + '": {"amax": 1.0}}}'
    )
    shown = _invoke(["inspect", str(ranges)])
    assert "evil" in shown.output and "\x1b" not in shown.output, shown.output


def test_a_path_with_a_newline_stays_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "a\nb"
    folder.mkdir()
    result = _invoke(["lint", str(folder / "x.onnx")])
    _one_line_error(result, "a\\nb")


@pytest.mark.parametrize("amax", [1e-42, 127 * 3.4e38, float(np.finfo(np.float32).max) * 2])
def test_quantize_refuses_scales_float32_cannot_hold(amax: float) -> None:
    from onnx2trt_lib.errors import CalibrationError
    from onnx2trt_lib.quant import quantize

    with pytest.raises(CalibrationError, match="no usable ranges"):
        quantize(conv_relu_model(), {"x": amax}, protect=False)


def test_quantize_keeps_a_zero_range_and_usable_neighbours() -> None:
    from onnx2trt_lib.quant import quantize

    out = quantize(conv_relu_model(), {"x": 0.0}, protect=False).model
    scales = [numpy_helper.to_array(t) for t in out.graph.initializer if "scale" in t.name.lower()]
    assert scales and all(np.all(np.isfinite(s * 127)) and np.all(s > 0) for s in scales)


@pytest.mark.parametrize("version", ["-1.-2.-3", "8.100.0", "\uff11\uff10.3"])
def test_bad_trt_version_is_refused_before_writing(tmp_path: Path, version: str) -> None:
    model = _one_input_model(tmp_path)
    data = tmp_path / "d.npy"
    np.save(data, np.zeros((2, 3, 8, 8), np.float32))
    result = _invoke(
        [
            "calibrate",
            str(model),
            "--data",
            str(data),
            "-o",
            str(tmp_path / "c"),
            f"--trt-version={version}",
        ]
    )
    _one_line_error(result, "not like 10.3.0")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("value", ['"3"', "[1]", "true", "-1", "1.5"])
def test_saved_state_with_a_bad_count_is_one_line(tmp_path: Path, value: str) -> None:
    import json

    model = _one_input_model(tmp_path)
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(0).random((2, 3, 8, 8), np.float32))
    state = tmp_path / "s.json"
    ok = _invoke(
        [
            "calibrate",
            str(model),
            "--data",
            str(data),
            "-o",
            str(tmp_path / "c"),
            "--save-state",
            str(state),
        ]
    )
    assert ok.exit_code == 0, ok.output
    document = json.loads(state.read_text())
    document["num_batches"] = json.loads(value)
    state.write_text(json.dumps(document))
    result = _invoke(
        [
            "calibrate",
            str(model),
            "--data",
            str(data),
            "-o",
            str(tmp_path / "c2"),
            "--add-state",
            str(state),
        ]
    )
    _one_line_error(result, "num_batches")


@pytest.mark.parametrize("command", ["inspect", "run"])
def test_an_engine_larger_than_memory_is_one_line(tmp_path: Path, monkeypatch, command) -> None:
    from onnx2trt_lib.build import engine as engine_module

    monkeypatch.setattr(engine_module, "memory_limit", lambda: 2**20)
    big = tmp_path / "big.engine"
    with open(big, "wb") as handle:  # sparse: no disk used
        handle.write(b"ftrt")
        handle.truncate(64 * 2**20)
    (tmp_path / "big.engine.json").write_text("{}")
    result = _invoke([command, str(big)])
    assert result.exit_code != 0
    assert "Traceback" not in result.output and "limit" in result.output, result.output


def test_huge_shape_with_images_is_refused_before_decoding(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    model = _save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "d.onnx"
    )
    images = tmp_path / "images"
    images.mkdir()
    _png(images / "a.png", 10)
    result = _invoke(
        [
            "calibrate",
            str(model),
            "--data",
            str(images),
            "-o",
            str(tmp_path / "c"),
            "--shape",
            "x:1x3x100000x100000",
            "-p",
            "imagenet",
        ]
    )
    _one_line_error(result, "limit")


_KILLED_MID_PUBLISH = """
import os, signal, sys
from pathlib import Path
from onnx2trt_lib import _io

folder = Path(sys.argv[1])
real = os.replace
renamed = []

def replace(src, dst):
    real(src, dst)
    if Path(dst).name in ("a.bin", "b.bin", "c.bin"):
        renamed.append(dst)
        if len(renamed) == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)  # between two renames of the set

os.replace = replace
with _io.output_set():
    for name in ("a.bin", "b.bin", "c.bin"):
        _io.write_bytes_atomic(folder / name, b"new " + name.encode())
"""


def _killed_mid_publish(folder: Path, after: int) -> None:
    """Old set a/b/c.bin, then a process that publishes the new set and is SIGKILLed after
    `after` of its three renames."""
    import subprocess

    for name in ("a.bin", "b.bin", "c.bin"):
        (folder / name).write_bytes(b"old " + name.encode())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_PUBLISH, str(folder), str(after)], env=env
    )
    assert done.returncode == -9


def _generation(folder: Path) -> set[str]:
    return {(folder / n).read_bytes().split()[0].decode() for n in ("a.bin", "b.bin", "c.bin")}


@pytest.mark.parametrize("after", [1, 2])
def test_a_set_killed_between_two_renames_is_finished_by_the_next_run(
    tmp_path: Path, after: int
) -> None:
    """SIGKILL between two renames of one output set used to leave new a.bin beside old b.bin
    for good; the journal written before the renames lets the next run finish the set."""
    from onnx2trt_lib._io import check_output_path

    _killed_mid_publish(tmp_path, after)
    assert _generation(tmp_path) == {"old", "new"}  # on disk right after the kill: mixed
    assert list(tmp_path.glob(".onnx2trt-set.*.journal"))
    check_output_path(tmp_path / "b.bin")  # the start of the next run writing there
    assert _generation(tmp_path) == {"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "c.bin"]


def test_a_reader_finishes_a_killed_set_before_reading(tmp_path: Path) -> None:
    from onnx2trt_lib._io import folder_lock

    _killed_mid_publish(tmp_path, 1)
    with folder_lock(tmp_path / "a.bin"):  # what a calibration-cache hit takes to read its set
        assert _generation(tmp_path) == {"new"}
    assert not list(tmp_path.glob(".onnx2trt-set.*"))


def test_a_planted_journal_renames_nothing_but_its_writers_temps(tmp_path: Path) -> None:
    """A journal names the temps to rename; only temps named as the library names them, beside
    their own target and from the journal's (dead) writer, are renamed."""
    import json
    import subprocess

    from onnx2trt_lib._io import _host_tag, recover_output_sets

    pid = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    (tmp_path / "secret").write_bytes(b"secret")
    (tmp_path / "out.bin").write_bytes(b"old")
    other = tmp_path / "other"
    other.mkdir()
    (other / "victim").write_bytes(b"victim")
    journal = tmp_path / f".onnx2trt-set.{_host_tag()}~{pid}.x.journal"
    journal.write_text(
        json.dumps(
            {
                "renames": [
                    [str(tmp_path / "secret"), str(tmp_path / "out.bin")],
                    [str(tmp_path / f".x.{_host_tag()}~{pid}.1.tmp"), str(other / "victim")],
                ],
                "journals": [str(tmp_path / "secret")],
            }
        )
    )
    live = tmp_path / f".onnx2trt-set.{_host_tag()}~{os.getpid()}.y.journal"  # this process's
    live.write_text("{}")
    document = json.loads(journal.read_text())
    document["journals"].append(str(live))
    journal.write_text(json.dumps(document))
    fifo = tmp_path / f".onnx2trt-set.{_host_tag()}~{pid}.z.journal"
    os.mkfifo(fifo)  # reading it would hang every later run in this folder
    assert recover_output_sets(tmp_path) == 1
    assert live.exists()  # another writer's journal is never removed
    assert (tmp_path / "secret").read_bytes() == b"secret"
    assert (tmp_path / "out.bin").read_bytes() == b"old"
    assert (other / "victim").read_bytes() == b"victim"
    assert not journal.exists()

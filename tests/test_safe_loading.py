"""Safe loading: nothing a model, cache or sidecar says may make the library read outside
the model's folder, run code, or read an unbounded amount into memory.

- ONNX external data whose location escapes the model folder (absolute path, `..`,
  symlinked file or folder) is refused, as in the onnx CVE-2024-27318/27319 class; a
  location that stays inside the folder (also through an inside symlink) still loads.
- No pickle, eval/exec, unsafe yaml or np.load(allow_pickle=True) anywhere in src/.
- Caches and sidecars larger than a sane limit are refused without being read whole.
"""

from __future__ import annotations

import ast
import os
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import conv_relu_model
from helpers import dotted_name as _dotted
from onnx import TensorProto, numpy_helper

SRC = Path(__file__).resolve().parents[1] / "src" / "onnx2trt_lib"
HUGE = 200 * 2**20  # a sparse file this big costs no disk; reading it whole would cost 200 MiB
HUGE_MIB = HUGE / 2**20


# ---------------------------------------------------------------- external data


def _save_external(
    folder: Path, location: str, *, write_data_to: Path | None = None
) -> tuple[Path, np.ndarray]:
    """conv_relu_model with initializer 'w' stored at `location` (relative to `folder`)."""
    model = conv_relu_model()
    tensor = next(t for t in model.graph.initializer if t.name == "w")
    weights = numpy_helper.to_array(tensor).copy()
    if write_data_to is not None:
        write_data_to.parent.mkdir(parents=True, exist_ok=True)
        write_data_to.write_bytes(weights.tobytes())
    onnx.external_data_helper.set_external_data(
        tensor, location=location, offset=0, length=weights.nbytes
    )
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path, weights


def _weights(model: onnx.ModelProto) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A 'secret' file outside the model folder, with the exact size the tensor wants."""
    secret = tmp_path / "secret" / "weights.bin"
    secret.parent.mkdir()
    secret.write_bytes(np.full(4 * 3 * 3 * 3, 7.0, np.float32).tobytes())
    return secret


def _escape_cases(tmp_path: Path, outside: Path) -> dict[str, Path]:
    models = tmp_path / "models"
    cases = {}
    cases["absolute"], _ = _save_external(models / "absolute", str(outside))
    cases["dotdot"], _ = _save_external(models / "dotdot", "../../secret/weights.bin")
    cases["dotdot-inside-first"], _ = _save_external(
        models / "inside_first", "sub/../../../secret/weights.bin"
    )
    folder = models / "symlink_file"
    folder.mkdir(parents=True)
    (folder / "w.bin").symlink_to(outside)
    cases["symlink-file"], _ = _save_external(folder, "w.bin")
    folder = models / "symlink_dir"
    folder.mkdir(parents=True)
    (folder / "data").symlink_to(outside.parent, target_is_directory=True)
    cases["symlink-dir"], _ = _save_external(folder, "data/weights.bin")
    folder = models / "symlink_chain"
    folder.mkdir(parents=True)
    (folder / "hop2").symlink_to(outside)
    (folder / "hop1").symlink_to(folder / "hop2")
    cases["symlink-chain"], _ = _save_external(folder, "hop1")
    return cases


ESCAPES = [
    "absolute",
    "dotdot",
    "dotdot-inside-first",
    "symlink-file",
    "symlink-dir",
    "symlink-chain",
]


@pytest.mark.parametrize("kind", ESCAPES)
def test_external_data_escaping_the_folder_is_refused(
    tmp_path: Path, outside: Path, kind: str
) -> None:
    from onnx2trt_lib._io import load_model
    from onnx2trt_lib.errors import ModelLoadError

    path = _escape_cases(tmp_path, outside)[kind]
    before = path.read_bytes()
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    message = str(info.value)
    assert "escapes the model folder" in message and str(path) in message
    assert "\n" not in message
    assert path.read_bytes() == before


@pytest.mark.parametrize("kind", ["dotdot", "symlink-file"])
def test_public_api_refuses_escapes_too(tmp_path: Path, outside: Path, kind: str) -> None:
    import onnx2trt_lib
    from onnx2trt_lib.errors import ModelLoadError

    path = _escape_cases(tmp_path, outside)[kind]
    for _ in range(2):  # twice: the second call runs after the subpackages are imported
        with pytest.raises(ModelLoadError, match="escapes"):
            onnx2trt_lib.fix(path, passes=["cleanup"])
        with pytest.raises(ModelLoadError, match="escapes"):
            onnx2trt_lib.lint(path, target="tensorrt-8.6")


def test_refusal_is_not_blanket_inside_locations_load(tmp_path: Path) -> None:
    """Controls: a plain file and a file in a subfolder load with the right values."""
    from onnx2trt_lib._io import load_model

    path, weights = _save_external(
        tmp_path / "plain", "w.bin", write_data_to=tmp_path / "plain" / "w.bin"
    )
    np.testing.assert_array_equal(_weights(load_model(path)), weights)
    path, weights = _save_external(
        tmp_path / "sub", "data/w.bin", write_data_to=tmp_path / "sub" / "data" / "w.bin"
    )
    np.testing.assert_array_equal(_weights(load_model(path)), weights)
    # (a symlink inside the folder to a file inside it is refused by onnx itself: not checked here)


def test_model_reached_through_a_symlinked_folder_still_loads(tmp_path: Path) -> None:
    """The model folder itself may be a symlink (e.g. a mounted data set); its own data is inside."""
    from onnx2trt_lib._io import load_model

    real = tmp_path / "real"
    path, weights = _save_external(real, "w.bin", write_data_to=real / "w.bin")
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    np.testing.assert_array_equal(_weights(load_model(tmp_path / "alias" / path.name)), weights)


@pytest.mark.parametrize("location", ["w\x00.bin", "\xff-not-utf8"])
def test_unreadable_location_names_are_a_load_error(tmp_path: Path, location: str) -> None:
    from onnx2trt_lib._io import load_model
    from onnx2trt_lib.errors import ModelLoadError

    path, _ = _save_external(tmp_path, "PLACEHOLDER")
    raw = location.encode("latin-1").ljust(
        len("PLACEHOLDER"), b"x"
    )  # same length: protobuf sizes stay valid
    path.write_bytes(path.read_bytes().replace(b"PLACEHOLDER", raw))
    with pytest.raises(ModelLoadError, match="not a valid file name"):
        load_model(path)


def test_the_unsafe_file_is_never_opened(tmp_path: Path, outside: Path, monkeypatch) -> None:
    """The check happens before onnx reads any external data (not after, as a filter)."""
    import builtins

    from onnx2trt_lib._io import load_model
    from onnx2trt_lib.errors import ModelLoadError

    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else repr(file))
        return real_open(file, *args, **kwargs)

    cases = _escape_cases(tmp_path, outside)
    monkeypatch.setattr(builtins, "open", spy)
    for path in cases.values():
        with pytest.raises(ModelLoadError):
            load_model(path)
    monkeypatch.undo()
    touched = [p for p in opened if Path(p).name in ("weights.bin", "w.bin", "hop1", "hop2")]
    assert not touched, f"opened outside data: {touched}"


# ---------------------------------------------------------------- no code execution on input paths


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def unsafe_deserialisation(source: str, filename: str = "<src>") -> list[str]:
    """Calls that can run code from data: pickle/marshal/shelve, eval/exec, yaml.load, np.load(allow_pickle=True)."""
    problems = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            )
            for name in names:
                if name.split(".")[0] in (
                    "pickle",
                    "cPickle",
                    "dill",
                    "marshal",
                    "shelve",
                    "joblib",
                    "cloudpickle",
                ):
                    problems.append(f"{filename}:{node.lineno}: imports {name}")
    for call in _calls(tree):
        name = _dotted(call.func)
        last = name.rsplit(".", 1)[-1]
        where = f"{filename}:{call.lineno}: {name}"
        if name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec"):
            problems.append(f"{where} runs code")
        if last == "load" and name.split(".")[0] in ("np", "numpy"):
            flag = _kw(call, "allow_pickle")
            if flag is None or not (isinstance(flag, ast.Constant) and flag.value is False):
                problems.append(f"{where} without allow_pickle=False")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            loader = _kw(call, "Loader")
            if name != "yaml.load" or loader is None or "Safe" not in ast.unparse(loader):
                problems.append(f"{where} is not yaml.safe_load")
        if name == "torch.load":
            flag = _kw(call, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                problems.append(f"{where} without weights_only=True")
    return problems


def test_detector_finds_planted_problems() -> None:
    planted = (
        "import pickle\nimport numpy as np\nimport yaml\n"
        "x = eval(s)\ny = np.load(p, allow_pickle=True)\nz = np.load(p)\nw = yaml.load(f)\n"
        "ok = np.load(p, allow_pickle=False)\nok2 = yaml.load(f, Loader=yaml.SafeLoader)\n"
    )
    found = unsafe_deserialisation(planted)
    assert len(found) == 5, found
    assert not any(":8:" in f or ":9:" in f for f in found)


def test_no_pickle_eval_or_unsafe_loads_in_src() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    problems = []
    for path in files:
        problems += unsafe_deserialisation(path.read_text(), str(path.relative_to(SRC)))
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- size limits


def _sparse(path: Path, size: int = HUGE, head: bytes = b"") -> Path:
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return path


def _peak_mib(func) -> tuple[float, object]:
    tracemalloc.start()
    try:
        try:
            result = func()
        except Exception as exc:  # noqa: BLE001 - the caller checks the type
            result = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20, result


def test_read_bytes_limited_refuses_before_reading(tmp_path: Path) -> None:
    from onnx2trt_lib._io import read_bytes_limited
    from onnx2trt_lib.errors import CacheFormatError

    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)
    assert read_bytes_limited(small, limit=100) == b"x" * 100
    peak, result = _peak_mib(
        lambda: read_bytes_limited(
            _sparse(tmp_path / "big"), limit=2**20, error=CacheFormatError, what="calibration cache"
        )
    )
    assert (
        isinstance(result, CacheFormatError)
        and "larger than" in str(result)
        and "big" in str(result)
    )
    assert peak < 8


def test_calibration_cache_size_is_limited(tmp_path: Path) -> None:
    from onnx2trt_lib.calib.cache import read_cache
    from onnx2trt_lib.errors import CacheFormatError

    path = _sparse(tmp_path / "huge.cache", head=b"TRT-8001-EntropyCalibration2\nx: 3c010a14\n")
    peak, result = _peak_mib(lambda: read_cache(path))
    assert isinstance(result, CacheFormatError), result
    assert peak < HUGE_MIB / 2, (
        f"read_cache held {peak:.0f} MiB for a {HUGE_MIB:.0f} MiB file: no size limit"
    )


def test_calibration_sidecar_size_is_limited(tmp_path: Path) -> None:
    from onnx2trt_lib.calib.sidecar import read_sidecar, sidecar_path

    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8001-EntropyCalibration2\n")
    _sparse(sidecar_path(cache), head=b'{"format": "onnx2trt-calib-sidecar/1", "pad": "')
    peak, result = _peak_mib(lambda: read_sidecar(cache))
    assert result is None
    assert peak < HUGE_MIB / 2, (
        f"read_sidecar held {peak:.0f} MiB for a {HUGE_MIB:.0f} MiB sidecar: no size limit"
    )


def test_engine_sidecar_size_is_limited(tmp_path: Path) -> None:
    from onnx2trt_lib.build.engine import EngineFileError, read_sidecar, sidecar_path

    engine = tmp_path / "e.engine"
    engine.write_bytes(b"vtrt")
    _sparse(sidecar_path(engine), head=b'{"format": "onnx2trt-engine", "pad": "')
    peak, result = _peak_mib(lambda: read_sidecar(engine))
    assert isinstance(result, EngineFileError), result
    assert peak < HUGE_MIB / 2, (
        f"engine read_sidecar held {peak:.0f} MiB for a {HUGE_MIB:.0f} MiB sidecar: no size limit"
    )


def test_endless_file_as_cache_fails_fast(tmp_path: Path) -> None:
    """/dev/zero named as a cache must fail with the limit, not read forever (run in a memory-capped child)."""
    import resource
    import subprocess
    import sys

    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    code = (
        "from onnx2trt_lib.calib.cache import read_cache\n"
        "try:\n    read_cache('/dev/zero')\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
        check=False,
    )
    assert proc.stdout.startswith("CacheFormatError"), (proc.stdout + proc.stderr)[-500:]
    assert "/dev/zero" in proc.stdout


# ---------------------------------------------------------------- array files and hostile sidecars


def test_load_arrays_never_unpickles(tmp_path: Path, monkeypatch) -> None:
    """Object arrays, pickles renamed .npy/.npz and torn zips all fail as one line; pickle never runs."""
    import pickle

    from onnx2trt_lib._io import load_arrays
    from onnx2trt_lib.errors import UsageError

    def no(*_a, **_k):
        raise AssertionError("pickle was called on an input file")

    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04" + bytes(30))
    np.savez(tmp_path / "ok.npz", x=np.arange(3.0))
    monkeypatch.setattr(pickle, "load", no)
    monkeypatch.setattr(pickle, "loads", no)
    for name in ("obj.npy", "obj.npz", "pickle.npy", "torn.npz"):
        with pytest.raises(UsageError) as info:
            load_arrays(tmp_path / name, what="--input", error=UsageError)
        assert name in str(info.value) and "\n" not in str(info.value)
        assert "unsafely" not in str(info.value)
    np.testing.assert_array_equal(load_arrays(tmp_path / "ok.npz")["x"], np.arange(3.0))


def test_calibration_sidecar_with_hostile_key_is_a_miss(tmp_path: Path) -> None:
    """A sidecar that matches the cache's sha256 but whose fields have the wrong types: a miss, not a crash."""
    import json

    from onnx2trt_lib.calib.sidecar import (
        SIDECAR_FORMAT,
        cache_hit,
        file_sha256,
        sidecar_path,
    )

    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8001-EntropyCalibration2\nx: 3c010a14\n")
    key = {"data_fingerprint": "f", "method": "entropy"}
    for hostile in ([1, 2], "key", 7, None):
        document = {"format": SIDECAR_FORMAT, "key": hostile, "cache_sha256": file_sha256(cache)}
        sidecar_path(cache).write_text(json.dumps(document))
        assert cache_hit(cache, key) is False

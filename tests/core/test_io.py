from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import conv_relu_model, run_ort

from onnx2trt_lib._io import OutputError, atomic_write, check_output_path, load_model, save_model
from onnx2trt_lib.errors import ModelLoadError


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temp left behind
    with atomic_write(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"


def test_check_output_path_refuses_bad_targets(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "o.onnx")
    with pytest.raises(OutputError, match="directory"):
        check_output_path(tmp_path)
    with pytest.raises(OutputError, match="same file"):
        check_output_path(model, inputs=(model,))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "not an ONNX model"),
        (os.urandom(64), "ONNX"),
        ("truncated", "ONNX"),
    ],
)
def test_load_model_errors_are_one_line(tmp_path: Path, content, message) -> None:
    path = tmp_path / "bad.onnx"
    if content == "truncated":
        data = conv_relu_model().SerializeToString()
        path.write_bytes(data[: len(data) // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_load_model_rejects_checker_failure(tmp_path: Path) -> None:
    model = conv_relu_model()
    model.graph.node[1].input[0] = "does_not_exist"
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match="checker"):
        load_model(path)


def test_external_data_round_trip_and_inputs_untouched(tmp_path: Path) -> None:
    model = conv_relu_model(channels=64)  # weight 4x64x3x3 floats > inline threshold
    out = tmp_path / "ext.onnx"
    save_model(model, out, external_data=True)
    assert (tmp_path / "ext.onnx.data").is_file()
    assert model.graph.initializer[0].HasField("raw_data") or model.graph.initializer[0].float_data
    loaded = load_model(out)
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 64, 8, 8)).astype(np.float32)}
    np.testing.assert_array_equal(run_ort(model, feeds)[0], run_ort(loaded, feeds)[0])


@pytest.mark.parametrize("location", ["/etc/passwd", "../outside.bin"])
def test_external_data_escaping_model_folder_is_refused(tmp_path: Path, location: str) -> None:
    model = conv_relu_model(channels=64)
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 10000)
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(
        tensor, location=location, offset=0, length=4 * 64 * 9 * 4
    )
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError, match="escapes the model folder"):
        load_model(path)


def test_temps_of_killed_writers_are_swept_but_live_or_recent_ones_kept(tmp_path: Path) -> None:
    import os
    import time

    from onnx2trt_lib._io import STALE_TEMP_SECONDS, write_bytes_atomic

    target = tmp_path / "model.v2.onnx"
    dead_pid = 2**22 + 4321  # above Linux's pid_max: no such process
    old = time.time() - STALE_TEMP_SECONDS - 60
    files = {
        "stale": tmp_path
        / f".model.v2.onnx.{dead_pid}.abc123.tmp",  # killed writer, untouched for long
        "recent": tmp_path / f".model.v2.onnx.{dead_pid}.def456.tmp",  # dead pid but still changing
        "live": tmp_path
        / f".model.v2.onnx.{os.getpid()}.ghi789.tmp",  # a live writer (this process)
        "other": tmp_path / f".model.onnx.{dead_pid}.jkl000.tmp",  # another target's temp
        "foreign": tmp_path / ".model.v2.onnx.notapid.tmp",  # not our pattern
    }
    for path in files.values():
        path.write_bytes(b"partial")
    for key in ("stale", "live", "other", "foreign"):
        os.utime(files[key], (old, old))
    write_bytes_atomic(target, b"done")
    assert target.read_bytes() == b"done"
    assert not files["stale"].exists()
    assert all(files[k].exists() for k in ("recent", "live", "other", "foreign"))
    assert not [
        p
        for p in tmp_path.iterdir()
        if p.name.startswith(".model.v2.onnx.") and p not in files.values()
    ]


def test_outputs_are_readable_by_others_whatever_the_umask(tmp_path: Path) -> None:
    """mkstemp makes 0600 files; a model or engine written for a server must be 0644 like `cp`'s."""
    from onnx2trt_lib._io import write_bytes_atomic, write_text_atomic

    old = os.umask(0o077)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"x")
        write_text_atomic(tmp_path / "b.txt", "y")
        save_model(conv_relu_model(), tmp_path / "m.onnx")
    finally:
        os.umask(old)
    for name in ("a.bin", "b.txt", "m.onnx"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_sha256_model_is_the_digest_of_the_deterministic_bytes() -> None:
    """The engine and calibration caches key in-memory models by this digest."""
    import hashlib

    from onnx2trt_lib._io import sha256_model

    model = conv_relu_model()
    want = hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    assert sha256_model(model) == want
    other = conv_relu_model(channels=8)
    assert sha256_model(other) != want


def test_checker_failure_message_is_the_checkers_first_line(tmp_path: Path) -> None:
    model = conv_relu_model()
    model.graph.node[1].input[0] = "does_not_exist"
    with pytest.raises(onnx.checker.ValidationError) as direct:
        onnx.checker.check_model(model)
    first = str(direct.value).strip().splitlines()[0]
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    assert str(info.value) == f"{path}: fails the ONNX checker: {first}"


def test_external_data_files_are_found_in_any_chunk(tmp_path: Path) -> None:
    from onnx2trt_lib._io import _mentions, external_data_files

    save_model(conv_relu_model(channels=64), tmp_path / "ext.onnx", external_data=True)
    assert external_data_files(tmp_path / "ext.onnx") == [tmp_path / "ext.onnx.data"]
    save_model(conv_relu_model(), tmp_path / "inline.onnx")
    assert external_data_files(tmp_path / "inline.onnx") == []
    text = tmp_path / "t.bin"
    text.write_bytes(b"0123location4567")
    for chunk in (8, 9, 10, 11, 12, 13, 1 << 20):  # split at each place (chunk >= needle), or whole
        assert _mentions(text, b"location", chunk=chunk), chunk
        assert not _mentions(text, b"locations", chunk=chunk), chunk


def test_shorten_keeps_short_text_and_cuts_long_text() -> None:
    from onnx2trt_lib._io import shorten

    assert shorten("a/b.onnx") == "a/b.onnx"
    assert shorten("x" * 80) == "x" * 80
    assert shorten("x" * 81) == "x" * 77 + "..." and len(shorten("y" * 500, 20)) == 20

"""The bad-input catalogue: one table of bad inputs across every CLI command.

Each case names the command line, the exit code expected and words the one-line message
must contain (what went wrong and where: usually the offending path). Every case also
checks what holds for all of them: no traceback on stdout/stderr, library errors are one
line on stderr, the inputs are unchanged and no temp or partial file is left behind.

Commands that exist as modules but are not registered in `cli.main.SUBCOMMANDS` yet are
registered for the duration of the test (the lead registers them); a case whose command
module does not exist skips with the reason.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import conv_relu_model
from onnx import TensorProto, helper, numpy_helper

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "onnx2trt_lib" / "data" / "sample"

# command -> module, for commands registered late by the lead
COMMAND_MODULES = {
    "fix": "fix_cmd",
    "lint": "lint_cmd",
    "passes": "passes_cmd",
    "run": "run_cmd",
    "compare": "compare_cmd",
    "calibrate": "calibrate_cmd",
    "build": "build_cmd",
    "inspect": "inspect_cmd",
    "quantize": "quantize_cmd",
    "fp16": "fp16_cmd",
    "quickstart": "quickstart_cmd",
    "ncnn": "ncnn_cmd",
}


# ---------------------------------------------------------------- workspace


def _big_model(floats: int = 40_000) -> onnx.ModelProto:
    """x + big constant: a model whose file is larger than a 64 KiB tmpfs."""
    big = numpy_helper.from_array(np.linspace(0, 1, floats, dtype=np.float32), "big")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "big"], ["y"], name="add")],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [floats])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [floats])],
        initializer=[big],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _external(location: str) -> onnx.ModelProto:
    model = conv_relu_model()
    tensor = next(t for t in model.graph.initializer if t.name == "w")
    onnx.external_data_helper.set_external_data(
        tensor, location=location, offset=0, length=len(tensor.raw_data) or 432
    )
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    return model


def _checker_fail() -> onnx.ModelProto:
    model = conv_relu_model()
    model.graph.node[1].input[0] = "undefined_tensor"
    return model


def _huge_header() -> bytes:
    """ModelProto field 7 (graph, length-delimited) claiming 2**40 bytes that are not there."""
    varint, n = bytearray(), 2**40
    while n >= 0x80:
        varint.append((n & 0x7F) | 0x80)
        n >>= 7
    varint.append(n)
    return b"\x08\x08" + b"\x3a" + bytes(varint) + b"\x0a\x02ab"


def _large_truncated(path: Path) -> None:
    """Nine 8192x8192 float32 weights (2.25 GiB, past protobuf's limit) declared in external
    data whose file holds 4 KiB: every reader must say so in one line (TensorRT and ONNX
    Runtime read the file themselves, so the loading gate checks each tensor's bounds)."""
    n, weights, nodes, previous = 8192, [], [], "x"
    for i in range(9):
        tensor = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[n, n])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", path.name + ".data"), ("offset", i * n * n * 4)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        entry = tensor.external_data.add()
        entry.key, entry.value = "length", str(n * n * 4)
        weights.append(tensor)
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"y{i}"]))
        previous = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, n])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    path.with_name(path.name + ".data").write_bytes(bytes(4096))


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A folder of good and bad inputs, made once for the module."""
    root = tmp_path_factory.mktemp("catalogue")
    good = conv_relu_model()
    onnx.save(good, root / "good.onnx")
    onnx.save(conv_relu_model(batch="N"), root / "dyn.onnx")
    onnx.save(_big_model(), root / "big.onnx")
    nan_out = conv_relu_model()
    nan_out.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(np.full((4, 3, 3, 3), np.nan, np.float32), "w")
    )
    onnx.save(nan_out, root / "nan_out.onnx")
    good_bytes = (root / "good.onnx").read_bytes()
    (root / "empty.onnx").write_bytes(b"")
    (root / "garbage.onnx").write_bytes(
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    )
    (root / "truncated.onnx").write_bytes(good_bytes[: len(good_bytes) // 2])
    (root / "text.onnx").write_text("this is a text file, not a model\n")
    (root / "huge_header.onnx").write_bytes(_huge_header())
    with open(root / "huge_file.onnx", "wb") as handle:  # sparse: no disk used
        handle.write(good_bytes)
        handle.truncate(2**31 + 4096)
    (root / "image.onnx").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (root / "folder.onnx").mkdir()
    onnx.save(_checker_fail(), root / "checker_fail.onnx")
    ext = root / "ext"
    ext.mkdir()
    (root / "secret.bin").write_bytes(bytes(432))
    onnx.save(_external("/etc/hostname"), ext / "ext_abs.onnx")
    onnx.save(_external("../secret.bin"), ext / "ext_dotdot.onnx")
    (ext / "link.bin").symlink_to(root / "secret.bin")
    onnx.save(_external("link.bin"), ext / "ext_symlink.onnx")
    onnx.save(_external("missing.bin"), ext / "ext_missing.onnx")
    # issue 17: weights beside the model that an output must never replace, strings, a FIFO
    weights = root / "weights"
    weights.mkdir()
    onnx.save(
        conv_relu_model(),
        str(weights / "w.onnx"),
        save_as_external_data=True,
        location="w.weights",
        size_threshold=0,
    )
    strings = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Identity", ["s"], ["t"])],
        "strings",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("t", TensorProto.STRING, [2]),
        ],
        initializer=[helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"])],
    )
    strings_model = helper.make_model(strings, opset_imports=[helper.make_opsetid("", 17)])
    strings_model.ir_version = 8
    onnx.save(strings_model, root / "strings.onnx")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "fifo.onnx")
    # feeds for run/compare (good.onnx: x float32[1,3,8,8] -> y)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.savez(root / "feed.npz", x=x)
    np.savez(root / "wrong_shape.npz", x=np.zeros((1, 3, 5, 5), np.float32))
    np.savez(root / "wrong_name.npz", nope=x)
    np.savez(root / "wrong_dtype.npz", x=x.astype(np.int64))
    np.savez(root / "nan.npz", x=np.full_like(x, np.nan))
    np.savez(root / "pickled.npz", x=np.array([{"a": 1}], dtype=object))
    (root / "not_npz.npz").write_text("x,y\n1,2\n")
    # calibration caches
    (root / "bad_header.cache").write_text("NOT-A-CACHE\nx: 3c010a14\n")
    (root / "bad_hex.cache").write_text("TRT-8001-EntropyCalibration2\nx: 3c010a14\ny: zzzzzzzz\n")
    (root / "no_sep.cache").write_text("TRT-8001-EntropyCalibration2\nx 3c010a14\n")
    (root / "dup.cache").write_text("TRT-8001-EntropyCalibration2\nx: 3c010a14\nx: 3c010a15\n")
    (root / "binary.cache").write_bytes(b"TRT-8001-EntropyCalibration2\nx: \xff\xfe\x00\x01\n")
    (root / "good.cache").write_text(
        "TRT-8001-EntropyCalibration2\nx: 3c010a14\nc: 3d010a14\ny: 3d810a14\n"
    )
    # engines: random bytes, a TensorRT-RTX magic with nothing behind it, a sidecar that lies
    (root / "foreign.engine").write_bytes(
        np.random.default_rng(2).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    )
    (root / "truncated.engine").write_bytes(b"vtrt" + bytes(60))
    (root / "badside.engine").write_bytes(b"vtrt" + bytes(60))
    (root / "badside.engine.json").write_text('{"format": "onnx2trt-engine", "format_version": 1, ')
    (root / "foreignside.engine").write_bytes(b"vtrt" + bytes(60))
    (root / "foreignside.engine.json").write_text(json.dumps({"format": "something-else"}))
    (root / "timing.cache").write_bytes(b"\x00garbage timing cache\xff" * 10)
    # images
    images = root / "images"
    images.mkdir()
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    (images / "empty.jpg").write_bytes(b"")
    (root / "list_missing.txt").write_text(str(root / "nowhere" / "a.png") + "\n")
    (root / "list_broken.txt").write_text(str(images / "broken.png") + "\n")
    (root / "empty_list.txt").write_text("")
    np.save(root / "calib_nan.npy", np.full((4, 3, 8, 8), np.nan, np.float32))
    np.save(
        root / "calib_inf.npy",
        np.where(np.arange(4 * 3 * 64).reshape(4, 3, 8, 8) % 7 == 0, np.inf, 1.0).astype(
            np.float32
        ),
    )
    np.save(
        root / "calib_ok.npy",
        np.random.default_rng(3).standard_normal((4, 3, 8, 8)).astype(np.float32),
    )
    np.save(root / "calib_wrong_shape.npy", np.zeros((4, 5, 7), np.float32))
    np.save(root / "calib_wrong_dim.npy", np.zeros((4, 3, 8, 9), np.float32))
    _large_truncated(root / "large_truncated.onnx")
    np.save(root / "calib_one_per_sample.npy", np.zeros((5, 1), np.float32))
    batch_only = helper.make_graph(  # x[1] -> Relu: its one dimension is the batch
        [helper.make_node("Relu", ["x"], ["y"])],
        "batch_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(
        helper.make_model(batch_only, opset_imports=[helper.make_opsetid("", 17)]),
        root / "batch_only.onnx",
    )
    np.save(root / "calib_pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (root / "pp_bad.json").write_text('{"size": [8, 8], "color": "PURPLE"}')
    (root / "state_garbage.npz").write_bytes(b"PK\x03\x04 not a zip really")
    (root / "ranges_torn.json").write_text(
        '{"format": "onnx2trt-ranges/1", "tensors": {"x": {"amax": 1.0, '
    )
    (root / "ranges_odd.json").write_text(
        '{"format": "onnx2trt-ranges/1", "tensors": {"x": {"scale": 1.0}}}'
    )
    (root / "pp_torn.json").write_text('{"size": [8, 8], "color": ')
    (root / "pp_torn.toml").write_text("size = [8, 8\ncolor = ")
    (root / "text.npy").write_text("not numpy\n")
    (root / "a_file").write_text("a file where a folder is expected\n")
    (root / "outdir").mkdir()
    PRISTINE.clear()
    PRISTINE.update(
        {
            str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and p.stat().st_size < 2**24
        }
    )
    return root


PRISTINE: dict[
    str, bytes
] = {}  # the workspace's small files as made, to undo a case that overwrote one


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """argv uses {ws} for the workspace folder; `says` are regexes the message must match."""

    id: str
    argv: tuple[str, ...]
    exit_code: int
    says: tuple[str, ...]
    needs: tuple[str, ...] = ()  # importable modules the case needs (skips with reason when absent)
    library_error: bool = True  # False: click's own usage error (its 3-line Usage/Error format)
    setup: str | None = None  # name of a special setup (mounts, monkeypatches)
    outputs: tuple[str, ...] = field(default=())  # files that must NOT exist afterwards
    never_says: tuple[str, ...] = ()  # regexes the message must not match (e.g. advice to unpickle)


def C(id, argv, code, *says, **kw) -> Case:
    return Case(id, tuple(argv.split()), code, says, **kw)


RTX = ("tensorrt_rtx",)
# no message may tell a user to load untrusted data unsafely
NEVER_SAY = (r"load it unsafely", r"pickle\.load")
CASES: list[Case] = [
    # ---- fix: model files
    C(
        "fix-missing",
        "fix {ws}/absent.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"absent\.onnx",
        "no such file",
        outputs=("o.onnx",),
    ),
    C(
        "fix-empty",
        "fix {ws}/empty.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"empty\.onnx",
        "not",
    ),
    C(
        "fix-garbage",
        "fix {ws}/garbage.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"garbage\.onnx",
        "not .*ONNX",
    ),
    C(
        "fix-truncated",
        "fix {ws}/truncated.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"truncated\.onnx",
        "not",
    ),
    C(
        "fix-text",
        "fix {ws}/text.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"text\.onnx",
        "not",
    ),
    C(
        "fix-huge-header",
        "fix {ws}/huge_header.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"huge_header\.onnx",
        "not",
    ),
    C(
        "fix-huge-file",
        "fix {ws}/huge_file.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"huge_file\.onnx",
        "2 GiB",
    ),
    C("lint-huge-file", "lint {ws}/huge_file.onnx", 1, r"huge_file\.onnx", "2 GiB"),
    # issue 17: a model past 2 GiB of external data whose data file is truncated
    *(
        C(
            f"{command.split()[0]}-large-truncated-data",
            command,
            1,
            r"large_truncated\.onnx: tensor 'w0': external data \(offset 0, 268435456 bytes\) "
            r"runs past the end of 'large_truncated\.onnx\.data' \(4096 bytes\)",
            outputs=("o.onnx", "e.engine"),
            needs=RTX if command.startswith("build") else (),
        )
        for command in (
            "lint {ws}/large_truncated.onnx",
            "fix {ws}/large_truncated.onnx -o {ws}/o.onnx",
            "fp16 {ws}/large_truncated.onnx -o {ws}/o.onnx",
            "build {ws}/large_truncated.onnx --backend tensorrt-rtx -o {ws}/e.engine",
            "run {ws}/large_truncated.onnx",
            "inspect {ws}/large_truncated.onnx",
        )
    ),
    C(
        "fix-image-as-onnx",
        "fix {ws}/image.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"image\.onnx",
        "not",
    ),
    C(
        "fix-engine-as-model",
        "fix {ws}/truncated.engine -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"truncated\.engine",
    ),
    C(
        "fix-npz-as-model",
        "fix {ws}/feed.npz -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"feed\.npz",
    ),
    C("lint-cache-as-model", "lint {ws}/good.cache", 1, r"good\.cache"),
    C(
        "fix-directory",
        "fix {ws}/folder.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"folder\.onnx",
        "directory",
    ),
    C(
        "fix-checker",
        "fix {ws}/checker_fail.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"checker_fail\.onnx",
        "checker",
    ),
    C(
        "fix-ext-absolute",
        "fix {ws}/ext/ext_abs.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"ext_abs\.onnx",
        r"/etc/hostname",
        "escapes",
    ),
    C(
        "fix-ext-dotdot",
        "fix {ws}/ext/ext_dotdot.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"ext_dotdot\.onnx",
        r"\.\./secret\.bin",
        "escapes",
    ),
    C(
        "fix-ext-symlink",
        "fix {ws}/ext/ext_symlink.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"ext_symlink\.onnx",
        r"link\.bin",
        "escapes",
    ),
    C(
        "fix-ext-missing",
        "fix {ws}/ext/ext_missing.onnx -o {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"ext_missing\.onnx",
        r"missing\.bin",
        "not found",
    ),
    # ---- fix: arguments and outputs
    C(
        "fix-unknown-target",
        "fix {ws}/good.onnx -o {ws}/o.onnx --target tensorrt-99",
        2,
        r"tensorrt-99",
    ),
    C(
        "fix-unknown-pass",
        "fix {ws}/good.onnx -o {ws}/o.onnx --passes cleanup,no-such-pass",
        2,
        r"no-such-pass",
        "pass",
    ),
    C(
        "fix-out-is-input",
        "fix {ws}/good.onnx -o {ws}/good.onnx --target tensorrt-8.6",
        1,
        r"good\.onnx",
        "same file",
    ),
    C(
        "fix-out-missing-folder",
        "fix {ws}/good.onnx -o {ws}/nowhere/o.onnx --target tensorrt-8.6",
        1,
        r"nowhere",
        "does not exist",
    ),
    C(
        "fix-out-is-folder",
        "fix {ws}/good.onnx -o {ws}/outdir --target tensorrt-8.6",
        1,
        r"outdir",
        "directory",
    ),
    C(
        "fix-out-under-file",
        "fix {ws}/good.onnx -o {ws}/a_file/o.onnx --target tensorrt-8.6",
        1,
        r"a_file",
        "does not exist",
    ),
    C(
        "fix-out-under-proc",
        "fix {ws}/good.onnx -o /proc/onnx2trt_out.onnx --target tensorrt-8.6",
        1,
        r"/proc/onnx2trt_out\.onnx",
        "cannot write|not writable",
    ),
    C(
        "fix-report-is-output",
        "fix {ws}/good.onnx -o {ws}/o.onnx --report {ws}/o.onnx --target tensorrt-8.6",
        1,
        r"o\.onnx",
        "same file",
    ),
    C(
        "fix-readonly-mount",
        "fix {ws}/good.onnx -o {ws}/ro/o.onnx --target tensorrt-8.6",
        1,
        r"ro",
        "not writable|read-only|cannot write",
        setup="readonly_mount",
    ),
    C(
        "fix-readonly-chmod",
        "fix {ws}/good.onnx -o {ws}/locked/o.onnx --target tensorrt-8.6",
        1,
        r"locked",
        "not writable",
        setup="chmod_readonly",
    ),
    C(
        "fix-disk-full-tmpfs",
        "fix {ws}/big.onnx -o {ws}/tiny/o.onnx --passes cleanup",
        1,
        r"tiny/o\.onnx",
        "space",
        setup="tiny_tmpfs",
        outputs=("tiny/o.onnx",),
    ),
    C(
        "fix-disk-full-writer",
        "fix {ws}/good.onnx -o {ws}/full.onnx --target tensorrt-8.6",
        1,
        r"full\.onnx",
        "space",
        setup="failing_fsync",
        outputs=("full.onnx",),
    ),
    C(
        "fix-report-disk-full",
        "fix {ws}/good.onnx -o {ws}/o2.onnx --report {ws}/r.json --target tensorrt-8.6",
        1,
        r"\.json|\.onnx",
        "space",
        setup="failing_fsync",
        outputs=("r.json", "o2.onnx"),
    ),
    # ---- lint
    C("lint-missing", "lint {ws}/absent.onnx", 1, r"absent\.onnx", "no such file"),
    C("lint-garbage", "lint {ws}/garbage.onnx", 1, r"garbage\.onnx"),
    C("lint-directory", "lint {ws}/folder.onnx", 1, r"folder\.onnx", "directory"),
    C("lint-unknown-target", "lint {ws}/good.onnx --target tensorrt-99", 2, r"tensorrt-99"),
    C(
        "lint-ext-dotdot",
        "lint {ws}/ext/ext_dotdot.onnx",
        1,
        r"ext_dotdot\.onnx",
        r"secret\.bin",
        "escapes",
    ),
    # ---- passes (takes no files: only click's usage errors)
    C("passes-extra-arg", "passes bogus", 2, r"bogus", library_error=False),
    # ---- run
    C("run-missing", "run {ws}/absent.onnx", 1, r"absent\.onnx", "no such file"),
    C("run-garbage", "run {ws}/garbage.onnx", 1, r"garbage\.onnx"),
    C(
        "run-feed-missing",
        "run {ws}/good.onnx --input {ws}/absent.npz",
        2,
        r"absent\.npz",
        "no such file",
    ),
    C(
        "run-feed-not-npz",
        "run {ws}/good.onnx --input {ws}/not_npz.npz",
        2,
        r"not_npz\.npz",
        "no zip or numpy header",
    ),
    C(
        "run-feed-bad-zip",
        "run {ws}/good.onnx --input {ws}/state_garbage.npz",
        2,
        r"state_garbage\.npz",
    ),
    C("run-feed-pickled", "run {ws}/good.onnx --input {ws}/pickled.npz", 2, r"pickled\.npz"),
    C(
        "run-feed-wrong-shape",
        "run {ws}/good.onnx --input {ws}/wrong_shape.npz",
        1,
        r"'?x'?",
        "shape|5",
    ),
    C("run-feed-wrong-name", "run {ws}/good.onnx --input {ws}/wrong_name.npz", 1, r"nope|'x'"),
    C(
        "run-feed-wrong-dtype",
        "run {ws}/good.onnx --input {ws}/wrong_dtype.npz",
        1,
        r"'?x'?",
        "int64|dtype|float32",
    ),
    C(
        "run-out-is-input",
        "run {ws}/good.onnx --input {ws}/feed.npz -o {ws}/feed.npz",
        1,
        r"feed\.npz",
        "same file",
    ),
    C("run-out-is-model", "run {ws}/good.onnx -o {ws}/good.onnx", 1, r"good\.onnx", "same file"),
    C("run-iterations-zero", "run {ws}/good.onnx -n 0", 2, r"iterations|0", library_error=False),
    C("run-foreign-engine", "run {ws}/foreign.engine", 1, r"foreign\.engine"),
    C("run-truncated-engine", "run {ws}/truncated.engine", 1, r"truncated\.engine"),
    # ---- compare
    C(
        "compare-missing-a",
        "compare {ws}/absent.onnx {ws}/good.onnx",
        1,
        r"absent\.onnx",
        "no such file",
    ),
    C("compare-garbage-b", "compare {ws}/good.onnx {ws}/garbage.onnx", 1, r"garbage\.onnx"),
    C(
        "compare-feed-wrong-shape",
        "compare {ws}/good.onnx {ws}/good.onnx --input {ws}/wrong_shape.npz",
        1,
        r"'?x'?",
        "shape|5",
    ),
    C(
        "compare-nan-output",
        "compare {ws}/nan_out.onnx {ws}/good.onnx --input {ws}/feed.npz",
        3,
        r"\by\b",
        "nan|NaN|non-finite",
        library_error=False,
    ),
    C(
        "compare-nan-feed",
        "compare {ws}/good.onnx {ws}/nan_out.onnx --input {ws}/nan.npz",
        (0, 3),
        r"\by\b",
        library_error=False,
    ),
    C(
        "compare-foreign-engine",
        "compare {ws}/foreign.engine {ws}/good.onnx",
        1,
        r"foreign\.engine",
    ),
    C("compare-different-models", "compare {ws}/big.onnx {ws}/good.onnx", (1, 3), r"\bx\b"),
    C(
        "compare-out-of-folder-data",
        "compare {ws}/ext/ext_dotdot.onnx {ws}/good.onnx",
        1,
        r"ext_dotdot\.onnx",
        "escapes",
    ),
    C(
        "compare-negative-atol",
        "compare {ws}/good.onnx {ws}/good.onnx --atol -1",
        2,
        r"atol|-1",
        library_error=False,
    ),
    # ---- calibrate
    C(
        "calibrate-missing-model",
        "calibrate {ws}/absent.onnx --data {ws}/feed.npz -o {ws}/c.cache",
        1,
        r"absent\.onnx",
    ),
    C(
        "calibrate-garbage-model",
        "calibrate {ws}/garbage.onnx --data {ws}/calib_nan.npy -o {ws}/c.cache",
        1,
        r"garbage\.onnx",
    ),
    C(
        "calibrate-data-missing",
        "calibrate {ws}/good.onnx --data {ws}/nowhere/ -o {ws}/c.cache",
        (1, 2),
        r"nowhere",
    ),
    C(
        "calibrate-list-missing-image",
        "calibrate {ws}/good.onnx --data {ws}/list_missing.txt -o {ws}/c.cache",
        (1, 2),
        r"a\.png|list_missing",
    ),
    C(
        "calibrate-broken-image",
        "calibrate {ws}/good.onnx --data {ws}/list_broken.txt -o {ws}/c.cache",
        (1, 2),
        r"broken\.png",
    ),
    C(
        "calibrate-empty-image",
        "calibrate {ws}/good.onnx --data {ws}/images/empty.jpg -o {ws}/c.cache",
        (1, 2),
        r"empty\.jpg",
    ),
    C(
        "calibrate-empty-list",
        "calibrate {ws}/good.onnx --data {ws}/empty_list.txt -o {ws}/c.cache",
        (1, 2),
        r"empty_list\.txt",
    ),
    C(
        "calibrate-nan-data",
        "calibrate {ws}/good.onnx --data {ws}/calib_nan.npy -o {ws}/c.cache",
        1,
        r"NaN|non-?finite",
        outputs=("c.cache",),
    ),
    C(
        "calibrate-inf-data",
        "calibrate {ws}/good.onnx --data {ws}/calib_inf.npy -o {ws}/c.cache",
        1,
        r"Inf|non-?finite",
        outputs=("c.cache",),
    ),
    C(
        "calibrate-wrong-shape",
        "calibrate {ws}/good.onnx --data {ws}/calib_wrong_shape.npy -o {ws}/c.cache",
        (1, 2),
        r"samples for input '\w+' do not fit: the array is 4x5x7, so 5x7 per sample .* the "
        r"model's input is 1x3x8x8, so 3x8x8 per sample .*: 2 dimension\(s\) per sample where "
        "the model takes 3",
    ),
    C(  # same rank: the message names the dimension that differs
        "calibrate-wrong-dim",
        "calibrate {ws}/good.onnx --data {ws}/calib_wrong_dim.npy -o {ws}/c.cache",
        (1, 2),
        r"so 3x8x9 per sample .*so 3x8x8 per sample .*dimension 3 is 9 where the model's is "
        "fixed at 8",
    ),
    C(  # issue 17: was "samples ... are 1 but the model's input is 1"
        "calibrate-batch-only-input",
        "calibrate {ws}/batch_only.onnx --data {ws}/calib_one_per_sample.npy -o {ws}/c.cache",
        (1, 2),
        r"the array is 5x1, so 1 per sample .* the model's input is 1, so a scalar per sample "
        r".*1 dimension\(s\) per sample where the model takes 0",
    ),
    C(
        "calibrate-pickled-npy",
        "calibrate {ws}/good.onnx --data {ws}/calib_pickled.npy -o {ws}/c.cache",
        (1, 2),
        r"calib_pickled\.npy",
    ),
    C(
        "calibrate-bad-method-option",
        "calibrate {ws}/good.onnx --data {ws}/calib_nan.npy -o {ws}/c.cache --method-option pct",
        2,
        r"pct",
        "KEY=VALUE",
    ),
    C(
        "calibrate-bad-shape-spec",
        "calibrate {ws}/dyn.onnx --data {ws}/calib_nan.npy -o {ws}/c.cache --shape x:1xAx8",
        2,
        r"1xAx8|x:",
    ),
    C(
        "calibrate-bad-preprocess",
        "calibrate {ws}/good.onnx --data {ws}/images -o {ws}/c.cache -p {ws}/pp_bad.json",
        2,
        r"PURPLE|color",
    ),
    C(
        "calibrate-unknown-preset",
        "calibrate {ws}/good.onnx --data {ws}/images -o {ws}/c.cache -p nosuchpreset",
        2,
        r"nosuchpreset",
    ),
    C(
        "calibrate-out-is-model",
        "calibrate {ws}/good.onnx --data {ws}/calib_nan.npy -o {ws}/good.onnx",
        1,
        r"good\.onnx",
    ),
    C(
        "calibrate-out-is-data",
        "calibrate {ws}/good.onnx --data {ws}/calib_ok.npy -o {ws}/calib_ok.npy",
        1,
        r"calib_ok\.npy",
        "same file",
    ),
    C(
        "calibrate-ranges-is-output",
        "calibrate {ws}/good.onnx --data {ws}/calib_inf.npy -o {ws}/c.cache --ranges {ws}/c.cache",
        (1, 2),
        r"c\.cache",
        "same file|different files",
    ),
    C(
        "calibrate-out-missing-folder",
        "calibrate {ws}/good.onnx --data {ws}/calib_nan.npy -o {ws}/nowhere/c.cache",
        1,
        r"nowhere",
    ),
    C(
        "calibrate-bad-state",
        "calibrate {ws}/good.onnx --data {ws}/calib_nan.npy -o {ws}/c.cache --add-state {ws}/state_garbage.npz",
        (1, 2),
        r"state_garbage\.npz",
    ),
    # ---- build
    C(
        "build-missing-model",
        "build {ws}/absent.onnx -o {ws}/e.engine --no-engine-cache",
        1,
        r"absent\.onnx",
    ),
    C(
        "build-garbage-model",
        "build {ws}/garbage.onnx -o {ws}/e.engine --no-engine-cache",
        1,
        r"garbage\.onnx",
        needs=RTX,
    ),
    C(
        "build-out-is-model",
        "build {ws}/good.onnx -o {ws}/good.onnx --no-engine-cache",
        1,
        r"good\.onnx",
        needs=RTX,
    ),
    C(
        "build-out-missing-folder",
        "build {ws}/good.onnx -o {ws}/nowhere/e.engine --no-engine-cache",
        1,
        r"nowhere",
        needs=RTX,
    ),
    C(
        "build-out-is-cache",
        "build {ws}/good.onnx -o {ws}/good.cache --no-engine-cache --int8 --cache {ws}/good.cache",
        1,
        r"good\.cache",
        "same file",
        needs=RTX,
    ),
    C(
        "build-bad-shapes",
        "build {ws}/dyn.onnx -o {ws}/e.engine --no-engine-cache --shapes x:1x3/oops",
        2,
        r"oops|x:1x3",
    ),
    C(
        "build-bad-workspace",
        "build {ws}/good.onnx -o {ws}/e.engine --no-engine-cache --workspace lots",
        2,
        r"lots",
    ),
    C(
        "build-dynamic-no-shapes",
        "build {ws}/dyn.onnx -o {ws}/e.engine --no-engine-cache",
        2,
        r"'x'",
        "--shapes",
        needs=RTX,
        outputs=("e.engine", "e.engine.json"),
    ),
    C(
        "build-int8-bad-cache",
        "build {ws}/good.onnx -o {ws}/e.engine --no-engine-cache --int8 --cache {ws}/bad_hex.cache",
        (1, 2),
        r"bad_hex\.cache|zzzzzzzz|int8|INT8",
        needs=RTX,
        outputs=("e.engine",),
    ),
    C(
        "build-garbage-timing-cache",
        "build {ws}/good.onnx -o {ws}/e.engine --no-engine-cache --timing-cache {ws}/timing.cache",
        (0, 1),
        r"timing\.cache|built",
        needs=RTX,
    ),
    C(
        "calibrate-preprocess-torn-json",
        "calibrate {ws}/good.onnx --data {ws}/images -o {ws}/c.cache -p {ws}/pp_torn.json",
        (1, 2),
        r"pp_torn\.json",
    ),
    C(
        "calibrate-preprocess-torn-toml",
        "calibrate {ws}/good.onnx --data {ws}/images -o {ws}/c.cache -p {ws}/pp_torn.toml",
        (1, 2),
        r"pp_torn\.toml",
    ),
    C(
        "calibrate-text-as-npy",
        "calibrate {ws}/good.onnx --data {ws}/text.npy -o {ws}/c.cache",
        (1, 2),
        r"text\.npy",
    ),
    C(
        "calibrate-pickled-npz",
        "calibrate {ws}/good.onnx --data {ws}/pickled.npz -o {ws}/c.cache",
        (1, 2),
        r"pickled\.npz",
    ),
    C("run-foreign-sidecar", "run {ws}/foreignside.engine", 1, r"foreignside\.engine"),
    C("run-torn-sidecar", "run {ws}/badside.engine", 1, r"badside\.engine"),
    # ---- ncnn (each fails before pnnx runs: no ncnn/pnnx needed)
    C(
        "ncnn-missing-model",
        "ncnn {ws}/absent.onnx --data {ws}/calib_ok.npy -o {ws}/nc",
        1,
        r"absent\.onnx",
        outputs=("nc",),
    ),
    C(
        "ncnn-garbage-model",
        "ncnn {ws}/garbage.onnx --data {ws}/calib_ok.npy -o {ws}/nc",
        1,
        r"garbage\.onnx",
        outputs=("nc",),
    ),
    C(
        "ncnn-out-is-a-file",
        "ncnn {ws}/good.onnx --data {ws}/calib_ok.npy -o {ws}/good.onnx",
        1,
        r"good\.onnx exists and is not a folder",
    ),
    C(
        "ncnn-data-missing",
        "ncnn {ws}/good.onnx --data {ws}/nowhere/ -o {ws}/nc",
        1,
        r"nowhere",
        outputs=("nc",),
    ),
    # ---- quantize
    C(
        "quantize-missing-model",
        "quantize {ws}/absent.onnx --cache {ws}/good.cache -o {ws}/q.onnx --no-protect",
        1,
        r"absent\.onnx",
    ),
    C(
        "quantize-garbage-model",
        "quantize {ws}/garbage.onnx --cache {ws}/good.cache -o {ws}/q.onnx --no-protect",
        1,
        r"garbage\.onnx",
    ),
    C(
        "quantize-cache-bad-hex",
        "quantize {ws}/good.onnx --cache {ws}/bad_hex.cache -o {ws}/q.onnx --no-protect",
        1,
        r"bad_hex\.cache:3",
        outputs=("q.onnx",),
    ),
    C(
        "quantize-cache-binary",
        "quantize {ws}/good.onnx --cache {ws}/binary.cache -o {ws}/q.onnx --no-protect",
        1,
        r"binary\.cache:2",
        outputs=("q.onnx",),
    ),
    C(
        "quantize-cache-missing",
        "quantize {ws}/good.onnx --cache {ws}/absent.cache -o {ws}/q.onnx --no-protect",
        1,
        r"absent\.cache",
    ),
    C(
        "quantize-out-is-model",
        "quantize {ws}/good.onnx --cache {ws}/good.cache -o {ws}/good.onnx --no-protect",
        1,
        r"good\.onnx",
        "same file",
    ),
    C(
        "quantize-out-is-cache",
        "quantize {ws}/good.onnx --cache {ws}/good.cache -o {ws}/good.cache --no-protect",
        1,
        r"good\.cache",
        "same file",
    ),
    C(
        "quantize-data-pickled",
        "quantize {ws}/good.onnx --cache {ws}/good.cache -o {ws}/q.onnx --data {ws}/pickled.npz",
        2,
        r"pickled\.npz",
        outputs=("q.onnx",),
    ),
    C(
        "quantize-data-not-numpy",
        "quantize {ws}/good.onnx --cache {ws}/good.cache -o {ws}/q.onnx --data {ws}/not_npz.npz",
        2,
        r"not_npz\.npz",
        outputs=("q.onnx",),
    ),
    C(
        "quantize-data-wrong-shape",
        "quantize {ws}/good.onnx --cache {ws}/good.cache -o {ws}/q.onnx --data {ws}/calib_wrong_shape.npy",
        (1, 2),
        r"calib_wrong_shape\.npy",
        r"\bx\b",
        outputs=("q.onnx",),
    ),
    # ---- fp16
    C("fp16-missing-model", "fp16 {ws}/absent.onnx -o {ws}/h.onnx", 1, r"absent\.onnx"),
    C(
        "fp16-ext-symlink",
        "fp16 {ws}/ext/ext_symlink.onnx -o {ws}/h.onnx",
        1,
        r"ext_symlink\.onnx",
        "escapes",
    ),
    C("fp16-out-is-model", "fp16 {ws}/good.onnx -o {ws}/good.onnx", 1, r"good\.onnx", "same file"),
    C(
        "fp16-cache-bad-line",
        "fp16 {ws}/good.onnx -o {ws}/h.onnx --cache {ws}/no_sep.cache",
        1,
        r"no_sep\.cache:2",
        outputs=("h.onnx",),
    ),
    C(
        "fp16-out-is-cache",
        "fp16 {ws}/good.onnx -o {ws}/good.cache --cache {ws}/good.cache",
        1,
        r"good\.cache",
        "same file",
    ),
    C("fp16-out-missing-folder", "fp16 {ws}/good.onnx -o {ws}/nowhere/h.onnx", 1, r"nowhere"),
    # ---- quickstart (its only input is the output folder)
    C(
        "quickstart-out-is-a-file",
        "quickstart --out {ws}/a_file --quiet",
        (1, 2),
        r"a_file",
        "not a folder",
    ),
    C("quickstart-out-under-a-file", "quickstart --out {ws}/a_file/sub --quiet", 1, r"a_file"),
    C(
        "quickstart-out-under-proc",
        "quickstart --out /proc/onnx2trt_qs --quiet",
        1,
        r"/proc/onnx2trt_qs",
    ),
    # ---- inspect
    C("inspect-cache-bad-header", "inspect {ws}/bad_header.cache", 2, r"bad_header\.cache"),
    C("inspect-cache-bad-hex", "inspect {ws}/bad_hex.cache", 1, r"bad_hex\.cache:3", "hex"),
    C("inspect-cache-no-separator", "inspect {ws}/no_sep.cache", 1, r"no_sep\.cache:2"),
    C("inspect-cache-duplicate", "inspect {ws}/dup.cache", 1, r"dup\.cache:3", "twice"),
    C("inspect-cache-binary", "inspect {ws}/binary.cache", 1, r"binary\.cache:2", "not text"),
    C("inspect-foreign-file", "inspect {ws}/foreign.engine", (1, 2), r"foreign\.engine"),
    C("inspect-empty", "inspect {ws}/empty.onnx", (1, 2), r"empty\.onnx"),
    C("inspect-bad-sidecar", "inspect {ws}/badside.engine", (0, 1, 2), r"badside\.engine"),
    C("inspect-ranges-torn", "inspect {ws}/ranges_torn.json", (1, 2), r"ranges_torn\.json"),
    C("inspect-ranges-missing-field", "inspect {ws}/ranges_odd.json", (1, 2), r"ranges_odd\.json"),
    C("inspect-missing", "inspect {ws}/absent.cache", 2, r"absent\.cache", library_error=False),
    # ---- issue 17: hostile inputs and bad luck
    C(
        "fix-o-is-external-weights",
        "fix {ws}/weights/w.onnx -o {ws}/weights/w.weights",
        1,
        r"w\.weights",
        "external data",
    ),
    C(
        "fix-report-is-external-weights",
        "fix {ws}/weights/w.onnx -o {ws}/o.onnx --report {ws}/weights/w.weights",
        1,
        r"w\.weights",
        "external data",
        outputs=("o.onnx",),
    ),
    C(
        "fp16-o-is-external-weights",
        "fp16 {ws}/weights/w.onnx -o {ws}/weights/w.weights",
        1,
        r"w\.weights",
        "external data",
    ),
    C(
        "run-o-is-external-weights",
        "run {ws}/weights/w.onnx -n 1 -o {ws}/weights/w.weights",
        1,
        r"w\.weights",
        "external data",
    ),
    C(
        "fix-string-initializer",
        "fix {ws}/strings.onnx -o {ws}/o.onnx",
        1,
        "strings",
        outputs=("o.onnx",),
    ),
    # fp16 on a string initializer now succeeds, the strings kept as they are
    # (tests/test_hostile.py::test_fp16_keeps_a_string_initializer_as_it_is)
    C("lint-fifo", "lint {ws}/fifo.onnx", 1, r"fifo\.onnx", "not a regular file"),
    C(
        "fix-fifo",
        "fix {ws}/fifo.onnx -o {ws}/o.onnx",
        1,
        "not a regular file",
        outputs=("o.onnx",),
    ),
    C(
        "calibrate-trt-version-negative",
        "calibrate {ws}/good.onnx --data {ws}/calib_ok.npy -o {ws}/c.cache --trt-version=-1.-2.-3",
        1,
        "not like 10.3.0",
        outputs=("c.cache",),
    ),
]


def _ids(case: Case) -> str:
    return case.id


# ---------------------------------------------------------------- running


def _cli(command: str):
    """The real `onnx2trt` group, with `command` registered if its module exists but is not registered yet."""
    from onnx2trt_lib.cli import main as cli_main

    if command not in cli_main.SUBCOMMANDS:
        module = COMMAND_MODULES.get(command)
        try:
            importlib.import_module(f"onnx2trt_lib.cli.{module}")
        except ImportError as exc:
            pytest.skip(f"`onnx2trt {command}` does not exist yet ({exc})")
    return cli_main


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (inputs must come out unchanged)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.parent.name not in ("ro", "tiny"):
            if (
                path.stat().st_size > 2**24
            ):  # the sparse 2 GiB file: size and mtime stand in for content
                out[str(path.relative_to(folder))] = (
                    f"{path.stat().st_size}:{path.stat().st_mtime_ns}"
                )
                continue
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob(".*.tmp")]


@pytest.fixture
def special(request, ws, monkeypatch):
    """Cases that need a mount or a failing writer; yields a cleanup-aware context."""
    case: Case = request.param
    mounted = None
    if case.setup == "readonly_mount":
        target = ws / "ro"
        target.mkdir(exist_ok=True)
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(target)],
            capture_output=True,
            check=False,
        ).returncode:
            pytest.skip(
                "cannot mount a read-only tmpfs here (needs root); chmod does not stop root"
            )
        mounted = target
    elif case.setup == "tiny_tmpfs":
        target = ws / "tiny"
        target.mkdir(exist_ok=True)
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)],
            capture_output=True,
            check=False,
        ).returncode:
            pytest.skip(
                "cannot mount a 64 KiB tmpfs here (needs root); fix-disk-full-writer covers ENOSPC"
            )
        mounted = target
    elif case.setup == "chmod_readonly":
        if os.geteuid() == 0:
            pytest.skip(
                "running as root: chmod does not stop root (fix-readonly-mount and fix-out-under-proc cover it)"
            )
        locked = ws / "locked"
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        request.addfinalizer(lambda: locked.chmod(0o755))
    elif case.setup == "failing_fsync":

        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", no_space)
    try:
        yield case
    finally:
        if mounted is not None:
            subprocess.run(["umount", str(mounted)], capture_output=True, check=False)


def _run_case(case: Case, ws: Path) -> tuple[int, str, str, BaseException | None]:
    cli_main = _cli(case.argv[0])
    for module in case.needs:
        pytest.importorskip(module, reason=f"{case.id} needs {module}")
    argv = [a.replace("{ws}", str(ws)) for a in case.argv]
    command = case.argv[0]
    registered = dict(cli_main.SUBCOMMANDS)
    cli_main.SUBCOMMANDS.setdefault(command, COMMAND_MODULES[command])
    try:
        result = CliRunner().invoke(cli_main.cli, argv, obj={}, catch_exceptions=True)
    finally:
        cli_main.SUBCOMMANDS.clear()
        cli_main.SUBCOMMANDS.update(registered)
    return result.exit_code, result.stdout, result.stderr, result.exception


@pytest.mark.parametrize("special", [c for c in CASES], ids=_ids, indirect=True)
def test_bad_input(special: Case, ws: Path) -> None:
    case = special
    before = _digest(ws)
    code, out, err, exc = _run_case(case, ws)
    where = f"\nstdout: {out[-800:]}\nstderr: {err[-1500:]}"
    if exc is not None and not isinstance(exc, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(exc))
        pytest.fail(
            f"{case.id}: uncaught {type(exc).__name__} (a traceback for the user):\n{tb[-3000:]}"
        )
    assert "Traceback" not in out + err, f"{case.id}: traceback without --debug{where}"
    expected = case.exit_code if isinstance(case.exit_code, tuple) else (case.exit_code,)
    assert code in expected, f"{case.id}: exit code {code}, expected {case.exit_code}{where}"
    if code != 0:
        text = err if case.library_error else (err + out)
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"{case.id}: failed without any message{where}"
        if case.library_error and code in (1, 2) and not (set(expected) - {1, 2}):
            assert len(lines) == 1, f"{case.id}: message is {len(lines)} lines, not one{where}"
            assert lines[0].startswith("error: "), (
                f"{case.id}: message is not an 'error:' line{where}"
            )
        message = "\n".join(lines)
    else:
        message = out + err
    for pattern in case.says:
        assert re.search(pattern, message), f"{case.id}: message does not say {pattern!r}{where}"
    for pattern in case.never_says + NEVER_SAY:
        assert not re.search(pattern, message), f"{case.id}: message says {pattern!r}{where}"
    after = _digest(ws)
    changed = [name for name in before if before[name] != after.get(name)]
    for name in changed:  # put the input back so one bug does not cascade into other cases
        if name in PRISTINE:
            (ws / name).write_bytes(PRISTINE[name])
    assert not changed, f"{case.id}: inputs modified or removed: {changed}{where}"
    assert not _leftovers(ws), f"{case.id}: temp files left: {_leftovers(ws)}"
    for name in case.outputs:
        assert not (ws / name).exists(), f"{case.id}: {name} written although the command failed"


def test_catalogue_is_large_and_covers_every_command() -> None:
    from onnx2trt_lib.cli.main import SUBCOMMANDS

    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"
    covered = {c.argv[0] for c in CASES}
    missing = sorted(set(SUBCOMMANDS) - covered)
    assert not missing, f"commands with no bad-input case: {missing}"


# ---------------------------------------------------------------- --debug, and the real console script


def _subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = "from onnx2trt_lib.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_no_traceback_without_debug_in_a_real_process(ws: Path) -> None:
    proc = _subprocess(
        ["fix", str(ws / "garbage.onnx"), "-o", str(ws / "o.onnx"), "--target", "tensorrt-8.6"], ws
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "garbage.onnx" in lines[0], proc.stderr


def test_debug_shows_the_traceback(ws: Path) -> None:
    proc = _subprocess(
        [
            "--debug",
            "fix",
            str(ws / "garbage.onnx"),
            "-o",
            str(ws / "o.onnx"),
            "--target",
            "tensorrt-8.6",
        ],
        ws,
    )
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ModelLoadError" in proc.stderr and "garbage.onnx" in proc.stderr


def test_debug_reraises_in_process(ws: Path) -> None:
    from onnx2trt_lib.cli.main import cli
    from onnx2trt_lib.errors import ModelLoadError

    result = CliRunner().invoke(cli, ["--debug", "lint", str(ws / "absent.onnx")], obj={})
    assert isinstance(result.exception, ModelLoadError)
    assert "absent.onnx" in str(result.exception)


def test_interrupt_is_one_line_and_exit_130(ws: Path, monkeypatch) -> None:
    """Ctrl-C during the slow part: exit 130, one line, no output file."""
    import onnx2trt_lib.passes._infra as infra
    from onnx2trt_lib.cli.main import cli

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(infra.PassManager, "run", interrupted)
    result = CliRunner().invoke(
        cli,
        ["fix", str(ws / "good.onnx"), "-o", str(ws / "ctrl_c.onnx"), "--target", "tensorrt-8.6"],
        obj={},
    )
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.stderr
    assert not (ws / "ctrl_c.onnx").exists()


def test_catalogue_table_documents_itself() -> None:
    """Every case says at least one thing about the message (what or where)."""
    for case in CASES:
        assert case.says, case.id
        assert textwrap.dedent(case.id) == case.id and re.fullmatch(r"[a-z0-9-]+", case.id), case.id

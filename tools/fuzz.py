"""Fuzz the loaders that read untrusted files: calibration cache, sidecars, ONNX model.

Run by hand (not in CI), one target at a time, e.g.

    nice python tools/fuzz.py cache --seconds 600
    nice python tools/fuzz.py calib-sidecar --seconds 600
    nice python tools/fuzz.py engine-sidecar --seconds 600
    nice python tools/fuzz.py model --seconds 600

Uses atheris (coverage-guided libFuzzer) when importable, else plain random byte
mutations of the seeds (`--engine random`). A target passes an input when it either loads it or raises the
library's own error (an `Onnx2TrtError`, which the CLI prints as one line). Any other
exception is a *finding*: it is recorded (type, message, innermost library frame, the
input as hex) in a JSON-lines file and fuzzing goes on, so one run reports every distinct
finding. Each finding belongs in tests/test_fuzz_regressions.py.

A summary line per run (target, engine, executions, seconds, distinct findings) is
appended to --summary (default /tmp/onnx2trt_fuzz/summary.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("ONNX2TRT_FUZZ_DIR", "/tmp/onnx2trt_fuzz"))


# ---------------------------------------------------------------- seeds


def _tiny_model(external: bool = False) -> bytes:
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:
        onnx.external_data_helper.set_external_data(
            model.graph.initializer[0], location="w.bin", offset=0, length=24
        )
        model.graph.initializer[0].ClearField("raw_data")
        model.graph.initializer[0].data_location = TensorProto.EXTERNAL
    return model.SerializeToString()


def _seeds(target: str) -> list[bytes]:
    if target == "cache":
        seeds = [
            b"TRT-8001-EntropyCalibration2\ninput: 3c010a14\nconv 1: 3d2e8f00\n",
            b"TRT-100300-MinMaxCalibration\nx: 7f800000\ny: 00000001\n",
            b"TRT-1-X\n",
        ]
        shared = REPO.parent / "shared" / "data" / "trt_caches"
        for path in sorted(shared.glob("*.cache"))[:3] if shared.is_dir() else []:
            seeds.append(path.read_bytes()[:4096])
        return seeds
    if target == "calib-sidecar":
        doc = {
            "format": "onnx2trt-calib-sidecar/1",
            "cache_sha256": "0" * 64,
            "key": {
                "model_sha256": "a" * 64,
                "data_fingerprint": "f",
                "method": "entropy",
                "method_options": {},
                "settings": {},
                "library_version": "0.1.0",
                "batch_size": 1,
                "shapes": None,
                "preprocess": None,
            },
        }
        return [json.dumps(doc).encode(), b"{}", b"[]", b"[" * 20000]
    if target == "engine-sidecar":
        doc = {
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
        return [json.dumps(doc, indent=2).encode(), b'{"format": "onnx2trt-engine"}', b"[" * 20000]
    if target == "model":
        seeds = [_tiny_model(), _tiny_model(external=True)]
        sample = REPO / "src" / "onnx2trt_lib" / "data" / "sample" / "digits.onnx"
        if sample.is_file() and sample.stat().st_size < 200_000:
            seeds.append(sample.read_bytes())
        return seeds
    raise SystemExit(f"unknown target {target!r}")


# ---------------------------------------------------------------- targets


class _FakeBackend:
    """Enough of build.backends.Backend for check_sidecar (no TensorRT import per input)."""

    name = "tensorrt-rtx"
    version = "1.7.0"
    label = "TensorRT-RTX 1.7.0"


def _make_target(target: str, scratch: Path) -> Callable[[bytes], None]:
    if target == "cache":
        from onnx2trt_lib.calib.cache import parse_cache, read_cache

        path = scratch / "fuzz.cache"

        def run(data: bytes) -> None:
            cache = parse_cache(data, source="fuzz")
            again = parse_cache(
                cache.to_bytes(), source="roundtrip"
            )  # what we write we must read back
            if again != cache:
                raise AssertionError("cache write -> read is not exact")
            path.write_bytes(data)
            read_cache(path)

        return run
    if target == "calib-sidecar":
        from onnx2trt_lib.calib.sidecar import cache_hit, read_sidecar, sidecar_path

        cache = scratch / "fuzz.cache"
        cache.write_bytes(b"TRT-8001-EntropyCalibration2\n")
        side = sidecar_path(cache)
        key = {"data_fingerprint": "f", "method": "entropy"}

        def run(data: bytes) -> None:
            side.write_bytes(data)
            doc = read_sidecar(cache)
            if doc is not None and not isinstance(doc, dict):
                raise AssertionError("read_sidecar returned a non-dict")
            cache_hit(cache, key)

        return run
    if target == "engine-sidecar":
        from onnx2trt_lib.build import engine as eng

        engine_path = scratch / "fuzz.engine"
        engine_path.write_bytes(b"vtrt")
        side = eng.sidecar_path(engine_path)

        def run(data: bytes) -> None:
            side.write_bytes(data)
            sidecar = eng.read_sidecar(engine_path)
            eng.check_sidecar(sidecar, _FakeBackend(), b"vtrt")
            report = {
                "path": str(engine_path),
                "size": 4,
                "sha256": "0" * 64,
                "sidecar": sidecar,
                "problems": [],
                "engine": {"loaded": False, "reason": "fuzz"},
            }
            eng.inspection_lines(report)

        return run
    if target == "model":
        from onnx2trt_lib._io import load_model

        folder = scratch / "model"
        folder.mkdir(exist_ok=True)
        (folder / "w.bin").write_bytes(np.arange(6, dtype=np.float32).tobytes())
        path = folder / "m.onnx"

        def run(data: bytes) -> None:
            path.write_bytes(data)
            load_model(path)

        return run
    raise SystemExit(f"unknown target {target!r}")


class Recorder:
    """Counts executions and keeps one record per distinct (type, library frame) finding."""

    def __init__(self, target: str, findings_path: Path) -> None:
        self.target = target
        self.path = findings_path
        self.executions = 0
        self.seen: dict[str, int] = {}

    def __call__(self, run: Callable[[bytes], None], data: bytes) -> None:
        from onnx2trt_lib.errors import Onnx2TrtError

        self.executions += 1
        try:
            run(data)
        except Onnx2TrtError as exc:
            if "\n" in str(exc).strip():
                self._record(exc, data, "multi-line error message")
        except RecursionError as exc:
            self._record(exc, data, "unexpected exception")
        except Exception as exc:  # noqa: BLE001 - every other exception is a finding
            self._record(exc, data, "unexpected exception")

    def _record(self, exc: BaseException, data: bytes, kind: str) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        lib = [f for f in frames if "onnx2trt_lib" in f.filename]
        where = f"{Path(lib[-1].filename).name}:{lib[-1].lineno}" if lib else "?"
        key = f"{kind}|{type(exc).__name__}|{where}"
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] > 1:
            return
        record = {
            "target": self.target,
            "kind": kind,
            "type": type(exc).__name__,
            "where": where,
            "message": str(exc)[:300],
            "input_hex": data[:2048].hex(),
            "input_len": len(data),
            "execution": self.executions,
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"FINDING {key}: {str(exc)[:120]}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- engines


def _run_atheris(
    target: str, run: Callable[[bytes], None], recorder: Recorder, seconds: int
) -> str:
    import atheris

    corpus = WORK / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(_seeds(target)):
        (corpus / f"seed{i}").write_bytes(seed)

    def one(data: bytes) -> None:
        recorder(run, data)

    deadline = time.monotonic() + seconds

    def one_timed(data: bytes) -> None:
        one(data)
        if time.monotonic() > deadline:
            _finish_and_exit(recorder, "atheris", seconds)

    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={seconds + 5}",
            "-rss_limit_mb=4096",
            "-max_len=65536",
            "-timeout=30",
            str(corpus),
        ],
        one_timed,
    )
    atheris.Fuzz()
    return "atheris"


def _run_hypothesis(
    target: str, run: Callable[[bytes], None], recorder: Recorder, seconds: int
) -> str:
    import random

    rng = random.Random(0)
    seeds = _seeds(target)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            elif op == 2:
                del data[pos : pos + rng.randint(1, 16)]
            else:
                data[pos:pos] = data[: rng.randint(0, 64)]
        recorder(run, bytes(data))
    return "random-mutation"


_START = time.monotonic()


def _finish_and_exit(recorder: Recorder, engine: str, seconds: int) -> None:
    elapsed = time.monotonic() - _START
    summary = {
        "target": recorder.target,
        "engine": engine,
        "executions": recorder.executions,
        "seconds": round(elapsed, 1),
        "requested_seconds": seconds,
        "distinct_findings": len(recorder.seen),
        "findings": recorder.seen,
        "findings_file": str(recorder.path),
    }
    with open(ARGS.summary, "a") as handle:
        handle.write(json.dumps(summary) + "\n")
    print(json.dumps(summary), flush=True)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=["cache", "calib-sidecar", "engine-sidecar", "model"])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    parser.add_argument("--summary", type=Path, default=WORK / "summary.jsonl")
    ARGS = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    ARGS.summary.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(
        tempfile.mkdtemp(
            prefix=f"fuzz-{ARGS.target}-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
        )
    )
    findings = WORK / f"findings-{ARGS.target}.jsonl"
    recorder = Recorder(ARGS.target, findings)
    engine = ARGS.engine
    if engine in ("auto", "atheris"):
        try:
            import atheris

            with atheris.instrument_imports(include=["onnx2trt_lib"]):
                run = _make_target(ARGS.target, scratch)
            engine = "atheris"
        except ImportError:
            if engine == "atheris":
                raise
            engine = "random"
    if engine == "random":
        run = _make_target(ARGS.target, scratch)
        _run_hypothesis(ARGS.target, run, recorder, ARGS.seconds)
        _finish_and_exit(recorder, "random-mutation", ARGS.seconds)
    _run_atheris(ARGS.target, run, recorder, ARGS.seconds)
    _finish_and_exit(recorder, "atheris", ARGS.seconds)


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()

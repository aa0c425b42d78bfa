"""First build vs. engine-cache hit, with TensorRT-RTX (or whatever `--backend` finds).

Target (issue 6): the second identical build is served from the engine cache at least 10x
faster than the first. Models: two generated ones (onnx.helper) and, when installed, the
three PaddleOCR models shipped in the rapidocr-onnxruntime wheel (real exported graphs).

    python benchmarks/bench_build_cache.py [--repeat 5] [--backend auto]

Prints a table; paste it into benchmarks/results/build.md with the machine line.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx2trt_lib.build import BuildConfig, Builder, detect_backend, profiles_from_specs


def conv_stack(depth: int = 12, channels: int = 64) -> onnx.ModelProto:
    """x[N,3,64,64] -> depth x (Conv 3x3 + Relu) -> GlobalAveragePool -> MatMul: a mid-size CNN."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "x", 3
    for i in range(depth):
        w = numpy_helper.from_array(
            (rng.standard_normal((channels, cin, 3, 3)) * 0.1).astype(np.float32), f"w{i}"
        )
        inits.append(w)
        nodes.append(
            helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1])
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        prev, cin = f"r{i}", channels
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    inits.append(
        numpy_helper.from_array(rng.standard_normal((channels, 10)).astype(np.float32), "fc")
    )
    nodes.append(helper.make_node("MatMul", ["flat", "fc"], ["y"], name="fc"))
    graph = helper.make_graph(
        nodes,
        "conv_stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _static(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with batch 1: the warm-up build needs no profile."""
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    return model


def tiny() -> onnx.ModelProto:
    return conv_stack(depth=1, channels=4)


def cases(tmp: Path) -> list[tuple[str, Path, BuildConfig]]:
    out = []
    for name, model, spec in (
        ("tiny conv (1 layer)", tiny(), "x:1x3x64x64/4x3x64x64/8x3x64x64"),
        ("conv stack (12 layers, 64 ch)", conv_stack(), "x:1x3x64x64/4x3x64x64/8x3x64x64"),
    ):
        path = tmp / f"{name.split()[0]}_{len(out)}.onnx"
        onnx.save(model, str(path))
        out.append((name, path, BuildConfig(profiles=profiles_from_specs([spec]))))
    try:
        import rapidocr_onnxruntime

        models = Path(rapidocr_onnxruntime.__file__).parent / "models"
        real = {
            "ch_ppocr_mobile_v2.0_cls_infer.onnx": "x:1x3x48x48/8x3x48x48/16x3x48x48",  # H, W share the dim name "?"
            "ch_PP-OCRv4_det_infer.onnx": "x:1x3x320x320/1x3x640x640/1x3x960x960",
            "ch_PP-OCRv4_rec_infer.onnx": "x:1x3x48x320/8x3x48x320/16x3x48x640",
        }
        for file, spec in real.items():
            if (models / file).is_file():
                out.append(
                    (
                        f"rapidocr {file}",
                        models / file,
                        BuildConfig(profiles=profiles_from_specs([spec])),
                    )
                )
    except ImportError:
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=5, help="cache hits timed per model (median shown)"
    )
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--only", default=None, help="substring of a model name to run alone")
    args = parser.parse_args()

    backend = detect_backend(args.backend)
    _ = backend.trt  # import before timing: both columns then measure the build path only
    print(
        f"backend: {backend.label}; python {platform.python_version()}; {platform.processor() or platform.machine()}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # warm-up: the first build in a process loads TensorRT's libraries; keep that out of the table
        Builder(BuildConfig(backend=args.backend), cache_dir=False).build(_static(conv_stack(1, 4)))
        for name, path, config in cases(tmp):
            if args.only and args.only not in name:
                continue
            config = config.replace(backend=args.backend)
            builder = Builder(config, cache_dir=tmp / f"cache-{len(rows)}")
            t0 = time.perf_counter()
            first = builder.build(path, tmp / "out.engine")
            t_first = time.perf_counter() - t0
            assert not first.cache_hit
            same, fresh = [], []
            for i in range(args.repeat):
                t0 = time.perf_counter()  # same output: already up to date, nothing rewritten
                res = builder.build(path, tmp / "out.engine")
                same.append(time.perf_counter() - t0)
                assert res.cache_hit and res.engine == first.engine
                t0 = (
                    time.perf_counter()
                )  # new output file: engine + sidecar copied out atomically (fsync)
                res = builder.build(path, tmp / f"new{i}.engine")
                fresh.append(time.perf_counter() - t0)
                assert res.cache_hit and res.engine == first.engine
            t_same, t_new = statistics.median(same), statistics.median(fresh)
            rows.append((name, path.stat().st_size, len(first.engine), t_first, t_same, t_new))
    print()
    print(
        "| model | ONNX KiB | engine KiB | first build s | hit, same output s | hit, new output s | speed-up (new output) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, onnx_size, engine_size, t_first, t_same, t_new in rows:
        print(
            f"| {name} | {onnx_size / 1024:.0f} | {engine_size / 1024:.0f} | {t_first:.3f} | {t_same:.4f} | "
            f"{t_new:.4f} | {t_first / t_new:.0f}x |"
        )
    worst = min(r[3] / r[5] for r in rows)
    print(
        f"\nmedians of {args.repeat}; worst speed-up {worst:.0f}x (target >= 10x): {'PASS' if worst >= 10 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()

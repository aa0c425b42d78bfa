"""Which ncnn layers and options are faster in INT8 on this CPU: single layers (Convolution 3x3
and 1x1, ConvolutionDepthWise 3x3 and 5x5) FP32 against INT8, and a MobileNet-style stack
(3x3 conv, then depthwise 3x3 + HardSwish + pointwise 1x1 + HardSwish blocks) as FP32, FP32
with fp16 or bf16 storage, INT8 (everything, requantize fusion on), INT8 with the depthwise
layers FP32, and that with bf16 storage for its FP32 layers. Hand-made models with random
weights (speed does not depend on the values), ncnn's default CPU options otherwise (packing,
sgemm, Winograd, light mode), `--threads` threads, every variant timed in alternation.

    python benchmarks/bench_ncnn_layers.py [--rounds 30] [--threads 1]
    python benchmarks/bench_ncnn_layers.py --narrow   # 3x3 convolutions: INT8 Winograd or not
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _conv(name, bottom, top, cin, cout, k, stride=1, act=""):
    return (
        f"Convolution {name} 1 1 {bottom} {top} 0={cout} 1={k} 3={stride} 4={k // 2} 5=1 "
        f"6={cin * cout * k * k}{act}"
    )


def _dw(name, bottom, top, c, k, stride=1, act=""):
    return (
        f"ConvolutionDepthWise {name} 1 1 {bottom} {top} 0={c} 1={k} 3={stride} 4={k // 2} 5=1 "
        f"6={c * k * k} 7={c}{act}"
    )


HSWISH = " 9=6 -23310=2,0.166666672,0.5"


def stack_layers(blocks: int = 8) -> tuple[list[str], tuple[int, int, int]]:
    """A MobileNet-like stack on a 3x224x224 input (activations fused as onnx2trt writes them)."""
    lines = ["Input in0 0 1 in0 0=224 1=224 2=3", _conv("stem", "in0", "s", 3, 32, 3, 2, HSWISH)]
    c, blob = 32, "s"
    for i in range(blocks):
        stride = 2 if i in (1, 3, 5) else 1
        cout = c * 2 if stride == 2 else c
        lines.append(_dw(f"dw{i}", blob, f"d{i}", c, 3, stride, HSWISH))
        lines.append(_conv(f"pw{i}", f"d{i}", f"p{i}", c, cout, 1, 1, HSWISH))
        c, blob = cout, f"p{i}"
    lines[-1] = lines[-1].replace(f" p{blocks - 1} ", " out0 ")
    return lines, (3, 112, 112)


def write_model(folder: Path, name: str, lines: list[str], *, int8: set[str], rng) -> None:
    """FP32 weights (tag 0) and, for the layers in `int8`, ncnn2int8's scales: ncnn quantizes
    FP32 weights itself at load time when int8_scale_term is set. Conv/dw pairs that are both
    INT8 get requantize fusion (101/102 and the next input scale)."""
    from onnx2trt_lib.ncnn.fuse import requantize_targets
    from onnx2trt_lib.ncnn.param import Param, read_param

    text = f"7767517\n{len(lines)} {len(lines)}\n" + "\n".join(lines) + "\n"
    path = folder / f"{name}.param"
    path.write_text(text)
    param = read_param(path)
    in_scale = 127 / 4.0
    targets = requantize_targets(param, {n: in_scale for n in int8})
    chunks = []
    for layer in param.layers:
        if not layer.type.startswith("Convolution"):
            continue
        n = int(layer.get(6))
        cout = int(layer.get(0))
        w = rng.normal(0, 0.1, n).astype(np.float32)
        chunks += [struct.pack("<I", 0), w.tobytes(), np.zeros(cout, "<f4").tobytes()]
        if layer.name in int8:
            rows = int(layer.get(7, 1)) if layer.type == "ConvolutionDepthWise" else cout
            absmax = np.abs(w.reshape(rows, -1)).max(1)
            chunks.append((127 / absmax).astype("<f4").tobytes())
            chunks.append(np.float32(in_scale).tobytes())
            term = 1 if layer.type == "ConvolutionDepthWise" else 2
            if layer.name in targets:
                chunks.append(np.float32(targets[layer.name]).tobytes())
                term += 100
            layer.set(8, term)
    path.write_text(Param(param.layers, param.blob_count).text())
    (folder / f"{name}.bin").write_bytes(b"".join(chunks))


def net(folder: Path, name: str, threads: int, **options):
    from onnx2trt_lib import _optional

    ncnn = _optional.ncnn()
    n = ncnn.Net()
    o = n.opt
    o.use_vulkan_compute = False
    o.num_threads = threads
    o.use_fp16_storage = o.use_fp16_packed = o.use_fp16_arithmetic = False
    o.use_bf16_storage = False
    for key, value in options.items():
        setattr(o, key, value)
    n.load_param(str(folder / f"{name}.param"))
    n.load_model(str(folder / f"{name}.bin"))
    return n


def timed(nets: dict, shape, rounds: int) -> dict[str, tuple[float, float]]:
    from onnx2trt_lib import _optional

    ncnn = _optional.ncnn()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    mat = ncnn.Mat(x)  # points into x, which lives until the end
    times: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(rounds):
        for key, n in nets.items():
            t = time.perf_counter()
            with n.create_extractor() as ex:
                ex.input("in0", mat)
                ex.extract("out0")
            times[key].append(time.perf_counter() - t)
    return {k: (1000 * min(v), 1000 * float(np.median(v))) for k, v in times.items()}


# (input channels, output channels, height = width, stride): narrow 3x3 convolutions, where
# ncnn's INT8 path picks Winograd whatever the size, and convolutions on 1-3 channel images
NARROW = [
    (16, 16, 4, 1),
    (16, 16, 8, 1),
    (16, 16, 16, 1),
    (1, 16, 28, 1),
    (3, 16, 48, 1),
    (32, 32, 8, 1),
    (32, 32, 16, 1),
    (64, 64, 8, 1),
    (64, 64, 14, 1),
    (128, 128, 14, 1),
    (1, 8, 8, 1),
    (3, 16, 224, 2),
    (3, 32, 224, 2),
]


def narrow_table(folder: Path, rng, threads: int, rounds: int) -> list[str]:
    """3x3 convolutions FP32, INT8 as ncnn picks the kernel, and INT8 with `31=64` (no
    Winograd, the layer feature mask onnx2trt writes for narrow ones on x86)."""
    rows = [
        "| Convolution 3x3 | FP32 us min | INT8 us min (ncnn's kernel) | INT8 `31=64` us min | "
        "INT8 / FP32 | INT8 `31=64` / FP32 | `31=64` / Winograd |",
        "|---|---|---|---|---|---|---|",
    ]
    for cin, cout, hw, stride in NARROW:
        body = [
            f"Input in0 0 1 in0 0={hw} 1={hw} 2={cin}",
            _conv("l", "in0", "out0", cin, cout, 3, stride),
        ]
        write_model(folder, "f", body, int8=set(), rng=rng)
        write_model(folder, "q", body, int8={"l"}, rng=rng)
        text = (folder / "q.param").read_text().replace(" 8=2", " 8=2 31=64")
        (folder / "m.param").write_text(text)
        (folder / "m.bin").write_bytes((folder / "q.bin").read_bytes())
        t = timed(
            {
                "fp32": net(folder, "f", threads, use_int8_inference=False),
                "int8": net(folder, "q", threads),
                "mask": net(folder, "m", threads),
            },
            (cin, hw, hw),
            rounds,
        )
        f, q, m = (1000 * t[k][0] for k in ("fp32", "int8", "mask"))
        rows.append(
            f"| {cin}->{cout}, {hw}x{hw}, stride {stride} | {f:.1f} | {q:.1f} | {m:.1f} | "
            f"{q / f:.2f} | {m / f:.2f} | {m / q:.2f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    parser.add_argument(
        "--narrow", action="store_true", help="only the narrow / image convolution table"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    load = [os.getloadavg()[0]]
    if args.narrow:
        with tempfile.TemporaryDirectory() as tmp:
            rows = narrow_table(Path(tmp), rng, args.threads, args.rounds)
        load.append(os.getloadavg()[0])
        rows += [
            "",
            f"{args.threads} thread(s), {args.rounds} rounds, load average {load[0]:.1f} "
            f"before, {load[1]:.1f} after.",
        ]
        text = "\n".join(rows) + "\n"
        print(text)
        if args.out:
            from onnx2trt_lib._io import write_text_atomic

            write_text_atomic(args.out, text)
        return
    lines_out = ["### single layers, FP32 vs INT8 (input FP32: the INT8 layer quantizes it)", ""]
    lines_out += [
        "| layer | FP32 ms min / median | INT8 ms min / median | INT8/FP32 min / median |"
    ]
    lines_out += ["|---|---|---|---|"]
    cases = [
        ("Convolution 3x3 64->64, 56x56", "conv", 64, 3, 56),
        ("Convolution 1x1 128->128, 28x28", "conv", 128, 1, 28),
        ("Convolution 1x1 256->256, 14x14", "conv", 256, 1, 14),
        ("ConvolutionDepthWise 3x3 128, 56x56", "dw", 128, 3, 56),
        ("ConvolutionDepthWise 5x5 256, 14x14", "dw", 256, 5, 14),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for label, kind, c, k, hw in cases:
            layer = (
                _conv("l", "in0", "out0", c, c, k)
                if kind == "conv"
                else _dw("l", "in0", "out0", c, k)
            )
            body = [f"Input in0 0 1 in0 0={hw} 1={hw} 2={c}", layer]
            write_model(folder, "f", body, int8=set(), rng=rng)
            write_model(folder, "q", body, int8={"l"}, rng=rng)
            t = timed(
                {
                    "fp32": net(folder, "f", args.threads, use_int8_inference=False),
                    "int8": net(folder, "q", args.threads),
                },
                (c, hw, hw),
                args.rounds,
            )
            f, q = t["fp32"], t["int8"]
            lines_out.append(
                f"| {label} | {f[0]:.3f} / {f[1]:.3f} | {q[0]:.3f} / {q[1]:.3f} | "
                f"{q[0] / f[0]:.2f} / {q[1] / f[1]:.2f} |"
            )
        body, shape = stack_layers()
        convs = {ln.split()[1] for ln in body if ln.startswith("Convolution")}
        dws = {ln.split()[1] for ln in body if ln.startswith("ConvolutionDepthWise")}
        write_model(folder, "f", body, int8=set(), rng=rng)
        write_model(folder, "q", body, int8=convs, rng=rng)
        write_model(folder, "qn", body, int8=convs - dws, rng=rng)
        fp16 = dict(use_fp16_storage=True, use_fp16_packed=True, use_fp16_arithmetic=True)
        variants = {
            "FP32": net(folder, "f", args.threads, use_int8_inference=False),
            "FP32, fp16 storage": net(folder, "f", args.threads, use_int8_inference=False, **fp16),
            "FP32, bf16 storage": net(
                folder, "f", args.threads, use_int8_inference=False, use_bf16_storage=True
            ),
            "INT8 (all, requantize)": net(folder, "q", args.threads),
            "INT8, depthwise FP32": net(folder, "qn", args.threads),
            "INT8, depthwise FP32, bf16 storage": net(
                folder, "qn", args.threads, use_bf16_storage=True
            ),
        }
        t = timed(variants, shape, args.rounds)
    load.append(os.getloadavg()[0])
    base = t["FP32"]
    lines_out += ["", "### MobileNet-style stack (17 layers, 3x224x224)", ""]
    lines_out += ["| variant | ms min / median | vs FP32 min / median |", "|---|---|---|"]
    lines_out += [
        f"| {k} | {v[0]:.3f} / {v[1]:.3f} | {v[0] / base[0]:.2f} / {v[1] / base[1]:.2f} |"
        for k, v in t.items()
    ]
    lines_out += [
        "",
        f"{args.threads} thread(s), {args.rounds} rounds, load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after.",
    ]
    text = "\n".join(lines_out) + "\n"
    print(text)
    if args.out:
        from onnx2trt_lib._io import write_text_atomic

        write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()

"""Where a tiny model's INT8 time goes in ncnn: the digits CNN (tests/quant/digits_cnn.py, 8x8
input, 3 convolutions and an InnerProduct, ~62k MACs, ~14 us a sample) FP32 against INT8, step
by step from what `onnx2trt ncnn` wrote before residual folding to what it writes now.

Models (same table: the `onnx2trt ncnn` run's input scales; weight scales recomputed per model):
  pnnx FP32          pnnx's model, activations fused (what was written before residual folding)
  folded FP32        x + conv(x) folded into the convolution (what is written now)
  INT8 before        pnnx FP32 in INT8, requantize where ncnn2int8 would (1 of 3 convolutions)
  INT8 + fold        folded, requantize into every next INT8 layer (3 of 3, the last one into
                     the InnerProduct through the Flatten)
  INT8 + mask        + no INT8 Winograd on the narrow 3x3 convolution (`31=64`): what is written
                     with `--int8-image-conv`
  INT8 written       + the first convolution (1 input channel, the image) FP32: what is written
                     on x86 by default

All timed in alternation in one process, one extractor per sample (light mode), 1 thread,
ncnn's default CPU options (fp16/bf16 storage off), then the FP32 and INT8 models with
Winograd or packing off, the cost of an extract that computes nothing (the input blob), and
the time to each layer's output (prefix times; an int8 blob is cast to float when
extracted, which the prefix times of INT8 blobs include).

    python benchmarks/bench_ncnn_digits.py [--rounds 200] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "quant"))


def _net(param: Path, bin_path: Path, *, int8: bool, **options):
    from onnx2trt_lib import _optional

    ncnn = _optional.ncnn()
    net = ncnn.Net()
    o = net.opt
    o.use_vulkan_compute = False
    o.num_threads = 1
    o.use_fp16_storage = o.use_fp16_packed = o.use_fp16_arithmetic = False
    o.use_bf16_storage = False
    o.use_int8_inference = int8
    for key, value in options.items():
        setattr(o, key, value)
    if net.load_param(str(param)) != 0 or net.load_model(str(bin_path)) != 0:
        raise RuntimeError(f"ncnn could not load {param}")
    return net


def _timed(nets: dict, x: np.ndarray, blob: dict[str, str], rounds: int):
    """(min, median) us per extract of each net, in alternation (bench_ncnn.latency)."""
    from bench_ncnn import latency

    return {k: (1000 * a, 1000 * b) for k, (a, b) in latency(nets, x, blob, rounds).items()}


def _accuracy(net, x, y) -> float:
    from onnx2trt_lib.ncnn.runtime import run

    out = np.stack([run(net, {"in0": xi}, ["out0"])["out0"] for xi in x])
    return float((out.argmax(1) == y).mean())


def _models(folder: Path, data) -> dict[str, tuple[Path, Path, bool]]:
    """Write the variants (see the module docstring) into `folder`."""
    import digits_cnn

    from onnx2trt_lib.ncnn import ncnn_int8
    from onnx2trt_lib.ncnn.convert import pnnx_convert
    from onnx2trt_lib.ncnn.fuse import fuse_activations
    from onnx2trt_lib.ncnn.int8 import weight_scales, write_int8
    from onnx2trt_lib.ncnn.param import read_floats, read_param, walk_bin
    from onnx2trt_lib.ncnn.table import NcnnTable, read_table

    blob, _ = digits_cnn.trained()
    onnx_path = folder / "digits.onnx"
    onnx_path.write_bytes(blob)
    np.save(folder / "calib.npy", data["x_calib"])
    r = ncnn_int8(onnx_path, str(folder / "calib.npy"), folder / "out", name="m")
    full = ncnn_int8(
        onnx_path, str(folder / "calib.npy"), folder / "full", name="m", image_conv=True
    )
    table = read_table(full.table)
    files = {
        "folded FP32": (r.param, r.bin, False),
        "INT8 + mask": (full.int8_param, full.int8_bin, True),
        "INT8 written": (r.int8_param, r.int8_bin, True),
    }

    def save(name, text, data_bytes, int8):
        p, b = folder / f"{name}.param", folder / f"{name}.bin"
        p.write_text(text)
        b.write_bytes(data_bytes)
        files[name] = (p, b, int8)

    def tables(param, bin_bytes, segs, layers):
        w = {n: weight_scales(param.layer(n), read_floats(bin_bytes, segs[n][0])) for n in layers}
        return NcnnTable(w, {n: table.inputs[n] for n in layers})

    converted = pnnx_convert(onnx_path, {"x": (1, 1, 8, 8)}, folder)
    pnnx, _ = fuse_activations(read_param(converted.param))
    pnnx_bin = converted.bin.read_bytes()
    segs = walk_bin(pnnx, pnnx_bin)
    save("pnnx FP32", pnnx.text(), pnnx_bin, False)
    text, data_bytes, _ = write_int8(
        pnnx, pnnx_bin, segs, tables(pnnx, pnnx_bin, segs, table.inputs)
    )
    save("INT8 before", text, data_bytes, True)
    folded = read_param(r.param)
    fbin = r.bin.read_bytes()
    fsegs = walk_bin(folded, fbin)
    text, data_bytes, _ = write_int8(folded, fbin, fsegs, tables(folded, fbin, fsegs, table.inputs))
    save("INT8 + fold", text, data_bytes, True)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    args = parser.parse_args()
    import digits_cnn

    from onnx2trt_lib.ncnn.param import QUANTIZED_TYPES, read_param

    data = digits_cnn.trained()[1]
    x_test, y_test = data["x_test"], data["y_test"]
    x = x_test[: args.samples]
    with tempfile.TemporaryDirectory() as tmp:
        files = _models(Path(tmp), data)
        order = [
            "pnnx FP32",
            "folded FP32",
            "INT8 before",
            "INT8 + fold",
            "INT8 + mask",
            "INT8 written",
        ]
        nets = {k: _net(files[k][0], files[k][1], int8=files[k][2]) for k in order}
        written = {k: files[k] for k in ("folded FP32", "INT8 + mask", "INT8 written")}
        for key, (p, b, int8) in written.items():
            nets[f"{key}, Winograd off"] = _net(p, b, int8=int8, use_winograd_convolution=False)
            nets[f"{key}, packing off"] = _net(p, b, int8=int8, use_packing_layout=False)
        blob = dict.fromkeys(nets, "out0")
        layers = {k: read_param(files[k][0]).layers for k in order}
        acc = {k: _accuracy(nets[k], x_test, y_test) for k in order}
        # prefix nets: the written pair, extracting each layer's output
        prefix = {}
        for key in ("folded FP32", "INT8 written"):
            p, b, int8 = files[key]
            for layer in layers[key]:
                name = f"{key} @ {layer.name}"
                prefix[name] = _net(p, b, int8=int8)
                blob[name] = layer.tops[0]
        load = [os.getloadavg()[0]]
        t = _timed({**nets, **prefix}, x, blob, args.rounds)
        load.append(os.getloadavg()[0])

    def cell(key):
        return f"{t[key][0]:.1f} / {t[key][1]:.1f}"

    out = [
        "| model | layers | INT8 / requantize (of Conv+InnerProduct) | accuracy (500 digits) | us per sample min / median | vs folded FP32 min / median |",
        "|---|---|---|---|---|---|",
    ]
    base = t["folded FP32"]
    for key in order:
        q = [x for x in layers[key] if x.type in QUANTIZED_TYPES]
        n8 = sum(1 for x in q if x.get(8))
        rq = sum(1 for x in q if int(x.get(8)) > 100)
        out.append(
            f"| {key} | {len(layers[key])} | {n8}/{len(q)} / {rq} | {acc[key]:.3f} | {cell(key)} | "
            f"{t[key][0] / base[0]:.2f} / {t[key][1] / base[1]:.2f} |"
        )
    out += ["", "| written model, option | us min / median |", "|---|---|"]
    for key in written:
        for opt in ("", ", Winograd off", ", packing off"):
            out.append(f"| {key}{opt} | {cell(key + opt)} |")
    out += [
        "",
        "| up to (layer output) | folded FP32 us min / median | INT8 written us min / median |",
    ]
    out += ["|---|---|---|"]
    for lf, lq in zip(layers["folded FP32"], layers["INT8 written"], strict=True):
        out.append(
            f"| {lf.type} {lf.name} | {cell('folded FP32 @ ' + lf.name)} | "
            f"{cell('INT8 written @ ' + lq.name)} |"
        )
    out += [
        "",
        f"{args.samples} samples x {args.rounds} rounds, 1 thread, load average {load[0]:.1f} "
        f"before, {load[1]:.1f} after.",
    ]
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        from onnx2trt_lib._io import write_text_atomic

        write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()

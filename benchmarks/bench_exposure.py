"""What exposing activations costs ONNX Runtime: plain FP32 inference vs the calibration session.

Calibration needs every collected tensor as a graph output, which stops fusions and adds layout
copies (NCHWc -> NCHW) that plain inference does not pay. This prints, per scope, the node counts
after ORT's optimisation with and without the exposed outputs, and the warm time of one pass over
the data for both (best of --repeats), with page faults per batch (0 once ORT's arena is warm).

    python benchmarks/bench_exposure.py [--model M] [--words 64] [--scopes all,qdq]
"""

from __future__ import annotations

import argparse
import collections
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).parent))
import bench_calibrate  # noqa: E402  (the model and the rendered words)


def optimized_ops(model: onnx.ModelProto, folder: Path, tag: str) -> collections.Counter:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(folder / f"{tag}.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return collections.Counter(
        node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node
    )


def timed(run, batches, repeats: int) -> tuple[float, float]:
    """(best seconds over the batches, minor page faults per batch in that run)."""
    best, faults = float("inf"), 0.0
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        seconds = time.perf_counter() - start
        if seconds < best:
            best = seconds
            faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / len(batches)
    return best, faults


def main() -> None:
    import onnxruntime as ort

    from onnx2trt_lib.calib._threads import ort_threads
    from onnx2trt_lib.calib.collect import CollectOptions, _Collector
    from onnx2trt_lib.calib.dataset import open_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="default: PP-OCRv4 rec from rapidocr-onnxruntime"
    )
    parser.add_argument("--words", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--scopes", default="all,qdq")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    path = args.model or bench_calibrate.rec_model()
    model = onnx.load(path)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        x = np.load(bench_calibrate.make_data(folder, args.words, 48, 320))
        batches = [
            x[i : i + args.batch_size]
            for i in range(0, len(x) - len(x) % args.batch_size, args.batch_size)
        ]
        plain_ops = optimized_ops(model, folder, "plain")
        options = ort.SessionOptions()
        options.intra_op_num_threads = ort_threads()
        plain = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        plain.run(None, {"x": batches[0]})
        plain_s, plain_faults = timed(lambda b: plain.run(None, {"x": b}), batches, args.repeats)
        print(
            f"plain: {sum(plain_ops.values())} nodes after optimisation, {plain_s:.3f} s, {plain_faults:.0f} faults/batch"
        )
        for scope in args.scopes.split(","):
            collector = _Collector(
                model, open_source([{"x": batches[0]}]), {}, None, CollectOptions(scope=scope), None
            )
            exposed = onnx.ModelProto()
            exposed.CopyFrom(model)
            exposed.graph.output.extend(onnx.ValueInfoProto(name=name) for name in collector.fetch)
            ops = optimized_ops(exposed, folder, scope)
            collector._activations({"x": batches[0]})
            seconds, faults = timed(
                lambda b, c=collector: c._activations({"x": b}), batches, args.repeats
            )
            changed = ", ".join(
                f"{op} {plain_ops[op]}->{ops[op]}"
                for op in sorted(set(ops) | set(plain_ops))
                if ops[op] != plain_ops[op]
            )
            print(
                f"scope {scope}: {len(collector.fetch)} outputs exposed, {sum(ops.values())} nodes ({changed}); "
                f"{seconds:.3f} s = {seconds / plain_s:.2f}x plain, {faults:.0f} faults/batch"
            )


if __name__ == "__main__":
    main()

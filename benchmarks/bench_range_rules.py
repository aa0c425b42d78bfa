"""Q/DQ range rules on PP-OCRv4 rec across calibration sets: how much full INT8 depends on the words.

For each calibration seed (64 rendered words, --seeds; seeds 2 and 3 draw bench_quant_accuracy's
held-out and test words and are refused) the model is calibrated once (histograms), and each
range rule (--rules) makes a full INT8 Q/DQ model (`quantize(..., protect=False)`, optionally
`--compensate` on the same 64 words); each is scored on the same test words (seed 3): exact-match
accuracy and agreement with FP32's reading. Rules: `mse` (the default flow's), `max`,
`entropy`, `pNN.NNN` (percentile of |x|).

`--sweep TENSOR` instead moves that one tensor's range over --sweep-points multiples of the first
seed's mse range, every other tensor at the first seed's mse range: how smooth accuracy is in
one range.

    python benchmarks/bench_range_rules.py --seeds 1,4,5 --rules mse,p99.999 [--compensate]
    python benchmarks/bench_range_rules.py --seeds 1 --sweep p2o.Add.55
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quant_accuracy import first_output, ocr_task, render_words  # noqa: E402

from onnx2trt_lib.calib.api import calibrate  # noqa: E402
from onnx2trt_lib.quant.api import quantize  # noqa: E402


def rule_ranges(state, rule: str) -> dict[str, float]:
    if rule.startswith("p"):
        return state.compute_amax("percentile", percentile=float(rule[1:]))
    return state.compute_amax(rule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,4,5", help="calibration seeds (64 words each)")
    parser.add_argument("--rules", default="mse,p99.999", help="comma list of range rules")
    parser.add_argument("--test", type=int, default=300, help="test words (seed 3)")
    parser.add_argument("--compensate", action="store_true", help="compensate=True as well")
    parser.add_argument("--sweep", default=None, metavar="TENSOR", help="sweep one tensor's range")
    parser.add_argument(
        "--sweep-points",
        default="0.90,0.945,0.97,0.986,1.0,1.01,1.027,1.04,1.051,1.07,1.093,1.118,1.15,1.232",
        help="multiples of the mse range for --sweep",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if {2, 3} & set(seeds):
        raise SystemExit("--seeds: seeds 2 and 3 draw the held-out and test words")
    task = ocr_task(args.test, 64, seeds[0])
    model = task.model
    fp32 = first_output(model, task.test)
    reading = task.score  # exact match against the rendered texts

    ref = fp32.argmax(2)  # FP32's greedy CTC path per word

    def evaluate(ranges: dict[str, float], feeds: list[dict]) -> str:
        q = quantize(
            model,
            ranges,
            protect=False,
            data=feeds if args.compensate else None,
            compensate=args.compensate,
        ).model
        out = first_output(q, task.test)
        same = np.mean([_ctc(a) == _ctc(b) for a, b in zip(out.argmax(2), ref, strict=True)])
        return f"acc {reading(out, None):.4f}  agreement with FP32 {same:.4f}"

    print(f"FP32 acc {reading(fp32, None):.4f} on {args.test} test words", flush=True)
    for seed in seeds:
        x, _ = render_words(64, seed=seed)
        feeds = [{"x": x[i : i + 32]} for i in range(0, 64, 32)]
        state = calibrate(model, feeds, method="entropy").state
        if args.sweep:
            base = state.compute_amax("mse")
            if args.sweep not in base:
                raise SystemExit(f"--sweep: no tensor {args.sweep!r}")
            for f in (float(v) for v in args.sweep_points.split(",")):
                r = dict(base)
                r[args.sweep] = base[args.sweep] * f
                print(
                    f"seed {seed} {args.sweep} = {r[args.sweep]:.5g} ({f:.3f} x mse): {evaluate(r, feeds)}",
                    flush=True,
                )
            continue
        for rule in args.rules.split(","):
            t = time.perf_counter()
            res = evaluate(rule_ranges(state, rule), feeds)
            comp = " + compensate" if args.compensate else ""
            print(f"seed {seed} {rule}{comp}: {res}  ({time.perf_counter() - t:.0f} s)", flush=True)


def _ctc(seq: np.ndarray) -> tuple[int, ...]:
    keep = np.concatenate([[True], seq[1:] != seq[:-1]]) & (seq != 0)
    return tuple(int(v) for v in seq[keep])


if __name__ == "__main__":
    main()

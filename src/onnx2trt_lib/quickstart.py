"""The whole journey on the bundled sample: lint, fix, calibrate, Q/DQ + FP16, accuracy, engine.

`onnx2trt quickstart` calls `run_quickstart`; it is also the shortest complete example of
the library's Python API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._io import OutputError, load_arrays, save_model, write_bytes_atomic
from ._sample import sample_dir
from .errors import MissingDependencyError, Onnx2TrtError, UsageError

log = logging.getLogger(__name__)

TARGET = "tensorrt-7.1"
PROTECT_SAMPLES = 64  # held-out test images used by accuracy protection, not for scoring
BATCH_PROFILE = "image:1x1x8x8/8x1x8x8/32x1x8x8"


@dataclass
class QuickstartSummary:
    out_dir: Path
    findings_before: list[str] = field(default_factory=list)
    findings_after: list[str] = field(default_factory=list)
    fix_changes: list[str] = field(default_factory=list)
    calibrated_tensors: int = 0
    int8_excluded: tuple[str, ...] = ()
    accuracy: dict[str, float] = field(default_factory=dict)
    engine: str | None = None
    engine_note: str = ""
    artifacts: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    next_steps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "target": TARGET,
            "findings_before": self.findings_before,
            "findings_after": self.findings_after,
            "fix_changes": self.fix_changes,
            "calibrated_tensors": self.calibrated_tensors,
            "int8_kept_in_float": list(self.int8_excluded),
            "accuracy": self.accuracy,
            "engine": self.engine,
            "engine_note": self.engine_note,
            "artifacts": {k: str(v) for k, v in self.artifacts.items()},
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "next_steps": self.next_steps,
        }


def _accuracy(model_path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    from .runtime import OrtRunner

    with OrtRunner(model_path) as runner:
        logits = runner.infer({"image": images})["logits"]
    return float(np.mean(logits.argmax(axis=1) == labels))


def run_quickstart(
    out_dir: str | Path, *, step: Callable[[str], None] | None = None
) -> QuickstartSummary:
    """Run every stage on the bundled sample, writing artifacts under `out_dir`."""
    from .api import fix, lint
    from .calib.api import calibrate
    from .quant.api import quantize, to_fp16

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    announce = step or (lambda message: log.info(message))
    sample = sample_dir()
    model = out / "digits.onnx"
    write_bytes_atomic(model, (sample / "digits.onnx").read_bytes())
    summary = QuickstartSummary(out_dir=out)
    test = load_arrays(sample / "digits_test.npz", what="quickstart sample", error=Onnx2TrtError)
    images, labels = test["image"], test["label"]
    held_out, score_images, score_labels = (
        images[:PROTECT_SAMPLES],
        images[PROTECT_SAMPLES:],
        labels[PROTECT_SAMPLES:],
    )

    def timed(name: str, message: str):
        announce(message)
        summary.seconds[name] = time.perf_counter()
        return name

    def done(name: str) -> None:
        summary.seconds[name] = time.perf_counter() - summary.seconds[name]

    done(timed("lint", f"lint for {TARGET}"))
    summary.findings_before = [
        f"{f.node}: {f.rule} -> {f.fix_pass}" for f in lint(model, target=TARGET)
    ]

    name = timed("fix", "fix Resize (align_corners) and GatherElements")
    fixed, report = fix(model, target=TARGET)
    fixed_path = out / "digits_fixed.onnx"
    save_model(fixed, fixed_path)
    summary.fix_changes = report.summary_lines()
    summary.findings_after = [f"{f.node}: {f.rule}" for f in lint(fixed_path, target=TARGET)]
    done(name)

    name = timed("calibrate", "INT8 entropy calibration on 64 bundled images")
    cache = out / "digits.cache"
    calibration = calibrate(
        fixed_path,
        sample / "calib_list.txt",
        preprocess=sample / "preprocess.json",
        output=cache,
        ranges_path=out / "digits.ranges.json",
    )
    summary.calibrated_tensors = len(calibration.amax)
    done(name)

    name = timed("quantize", "Q/DQ model with accuracy protection, and an FP16 model")
    int8_path, fp16_path = out / "digits_int8.onnx", out / "digits_fp16.onnx"
    int8 = quantize(fixed_path, calibration.amax, data=held_out, output=int8_path)
    summary.int8_excluded = int8.excluded
    to_fp16(fixed_path, keep_io_types=True, output=fp16_path)
    done(name)

    name = timed("accuracy", f"accuracy on {len(score_labels)} held-out test images (ONNX Runtime)")
    for label, path in (
        ("fp32", model),
        ("fixed", fixed_path),
        ("int8", int8_path),
        ("fp16", fp16_path),
    ):
        summary.accuracy[label] = _accuracy(path, score_images, score_labels)
    done(name)

    name = timed("build", "TensorRT engine from the Q/DQ model")
    summary.artifacts = {
        "fixed model": fixed_path,
        "calibration cache": cache,
        "ranges": out / "digits.ranges.json",
        "INT8 Q/DQ model": int8_path,
        "FP16 model": fp16_path,
    }
    try:
        from .build import BuildConfig, Builder, profiles_from_specs

        config = BuildConfig(profiles=profiles_from_specs([BATCH_PROFILE]))
        engine_path = out / "digits_int8.engine"
        result = Builder(config, cache_dir=out / "engine-cache").build(int8_path, engine_path)
        summary.engine = str(engine_path)
        summary.engine_note = (
            f"{result.backend.name} {result.backend.version}, target {result.sidecar.get('target')}"
        )
        summary.artifacts["engine"] = engine_path
    except MissingDependencyError:
        summary.engine_note = "no TensorRT installed: pip install tensorrt-rtx (or onnx2trt_lib[rtx]) to build engines"
    except Onnx2TrtError as exc:
        summary.engine_note = f"engine build failed: {str(exc).splitlines()[0]}"
    done(name)
    summary.next_steps = next_steps(summary)
    return summary


def next_steps(summary: QuickstartSummary) -> list[str]:
    """Commands to try next: look at what was written, then the same steps on your own model."""
    steps = []
    if summary.engine is not None:
        steps.append(f"onnx2trt inspect {summary.engine}   # the engine's inputs, outputs, profile")
    else:
        steps.append("pip install tensorrt-rtx   # then run quickstart again to build an engine")
    steps += [
        f"onnx2trt inspect {summary.artifacts['calibration cache']}   # the per-tensor INT8 scales",
        "onnx2trt lint model.onnx   # your model: what the TensorRT parser would refuse",
        "onnx2trt fix model.onnx -o model_fixed.onnx",
        "onnx2trt calibrate model_fixed.onnx --data images/ --preprocess imagenet -o model.cache",
        "onnx2trt quantize model_fixed.onnx --cache model.cache -o model_int8.onnx",
        "onnx2trt build model_int8.onnx -o model.engine",
    ]
    return steps

"""The flat API, `onnx2trt_lib.<name>`: one call per step of the journey, as in the CLI.

    lint -> fix -> calibrate -> quantize / to_fp16 -> build -> run / compare, and inspect

Every function takes a model as a path or an `onnx.ModelProto` and never modifies its input.
Heavy libraries (onnx, numba, onnxruntime, TensorRT, cuda-python) load inside each call, so
`import onnx2trt_lib` stays cheap. The packages below (`calib`, `quant`, `build`, `runtime`)
hold the building blocks for finer control.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the annotations: nothing heavy at import time
    import numpy as np
    import onnx

    from .build import BuildResult, Profile
    from .calib.api import CalibrationResult
    from .passes import Pass, PipelineReport
    from .quant.api import Fp16Result, QuantizeResult
    from .runtime import CompareReport


def _resolve_passes(target: Any, passes: Sequence[str | Pass] | None) -> list[Pass]:
    from .compat import get_target, passes_for_target
    from .passes import get_pass

    if passes is None:
        if target is None:
            from .compat.targets import default_target

            target = default_target()[0]
        return passes_for_target(get_target(target) if isinstance(target, str) else target)
    return [get_pass(p) if isinstance(p, str) else p for p in passes]


def lint(model: str | os.PathLike | onnx.ModelProto, *, target: str | None = None) -> list:
    """Findings: the nodes the `target` parser refuses, each with the pass that fixes it (or None).

    `target` defaults to the installed TensorRT (full TensorRT, else TensorRT-RTX), else the
    newest one (`onnx2trt_lib.compat.targets.default_target`).
    """
    from ._io import load_model
    from .compat import get_target, lint_model
    from .compat.targets import resolve_target

    return lint_model(load_model(model), get_target(resolve_target(target)[0]))


def fix(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    target: str | None = None,
    passes: Sequence[str | Pass] | None = None,
    set_dims: Sequence[str] | Mapping[str, int] = (),
    rename_dims: Sequence[str] | Mapping[str, str] = (),
    check: bool = True,
    check_inputs: Mapping[str, np.ndarray] | None = None,
) -> tuple[onnx.ModelProto, PipelineReport]:
    """Rewrite `model` so the `target` TensorRT parser accepts it.

    Runs the pipeline the target needs (or the given pass names / instances, in order) on
    a copy; the input model or file is never modified. `set_dims` ({"batch": 1} or
    ["batch=1", "x:0=1"]) fixes symbolic dimensions, `rename_dims` (["x:2=height"]) renames
    them, before the passes run. Returns (fixed model, report). `target` defaults as in `lint`.

    With `check` (the default), the model the passes start from and the fixed model run in
    ONNX Runtime on generated inputs (or `check_inputs`) and every output must match; a
    mismatch raises `errors.EquivalenceError` (a PassError) naming the pass that caused it.
    `report.check` says what was checked, or why it was skipped (ONNX Runtime cannot run
    the original).
    """
    from ._io import load_model
    from .passes import PassManager

    source = load_model(model)
    if set_dims or rename_dims:
        from .dims import rewrite_dims

        source, _ = rewrite_dims(source, set_dims=set_dims, rename_dims=rename_dims)
    pipeline = _resolve_passes(target, passes)
    fixed, report = PassManager(pipeline).run(source)
    if check or check_inputs is not None:
        from .verify import check_fix

        report = dataclasses.replace(
            report, check=check_fix(source, fixed, pipeline, inputs=check_inputs)
        )
    return fixed, report


def calibrate(
    model: str | os.PathLike | onnx.ModelProto, data: Any, **options: Any
) -> CalibrationResult:
    """INT8 calibration of `model` on `data`: TensorRT cache (`output=`), ranges, sidecar.

    `data`: an image list (.txt), folder or glob (with `preprocess=`), .npy/.npz (arrays taken
    by input name, other arrays ignored), a dict of arrays or an iterable of {input: batch}.
    `shapes=` fixes dynamic input shapes ("x:1x3x224x224"). Other options: see
    `onnx2trt_lib.calib.api.calibrate`.
    """
    from .calib.api import calibrate as _calibrate

    return _calibrate(model, data, **options)


def quantize(
    model: str | os.PathLike | onnx.ModelProto,
    ranges: Any,
    *,
    data: Any = None,
    **options: Any,
) -> QuantizeResult:
    """INT8 Q/DQ model (TensorRT 11 / RTX style) from a float model and calibrated ranges.

    `ranges`: a calibration cache path, a `calibrate()` result's `.amax`, or {tensor: amax}.
    With held-out `data`, accuracy protection keeps the most sensitive layers in float. Other
    options: see `onnx2trt_lib.quant.api.quantize`.
    """
    from .quant.api import quantize as _quantize

    return _quantize(model, ranges, data=data, **options)


def to_fp16(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    keep_io_types: bool = True,
    **options: Any,
) -> Fp16Result:
    """FP16 copy of a float32 model; overflow-prone nodes stay float32 behind Casts.

    Graph inputs and outputs stay float32 by default (as Polygraphy's `--fp-to-fp16` does), so
    callers keep feeding float32; `keep_io_types=False` makes them float16 too.
    """
    from .quant.api import to_fp16 as _to_fp16

    return _to_fp16(model, keep_io_types=keep_io_types, **options)


def build(
    model: str | os.PathLike | onnx.ModelProto,
    output: str | os.PathLike | None = None,
    *,
    shapes: str | Sequence[str | Profile] = (),
    fp16: bool = False,
    int8: bool = False,
    cache: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    engine_cache_dir: str | os.PathLike | None | bool = None,
    **config: Any,
) -> BuildResult:
    """Build (or fetch from the engine cache) a TensorRT engine; write it and its sidecar to `output`.

    `shapes`: one profile as "x:1x3x224x224/8x3x224x224/32x3x224x224" (MIN/OPT/MAX; one
    shape means fixed), a list of them (one profile each), or `build.Profile` objects.
    `int8` takes a calibration `cache` or calibration `data`; `engine_cache_dir=False` always
    builds. Other `config` keys: the fields of `onnx2trt_lib.build.BuildConfig` (backend,
    workspace, timing_cache, preprocess, fp16_io, ...).
    """
    from .build import BuildConfig, Builder, Profile, profiles_from_specs

    specs = [shapes] if isinstance(shapes, str) else list(shapes)
    profiles = tuple(p for p in specs if isinstance(p, Profile)) + profiles_from_specs(
        [s for s in specs if not isinstance(s, Profile)]
    )
    settings = BuildConfig(
        fp16=fp16,
        int8=int8,
        calibration_cache=None if cache is None else str(cache),
        calibration_data=None if data is None else str(data),
        profiles=profiles,
        **config,
    )
    return Builder(settings, cache_dir=engine_cache_dir).build(model, output)


def run(
    model: Any,
    inputs: Mapping[str, Any] | None = None,
    *,
    provider: str = "cpu",
) -> dict[str, np.ndarray]:
    """Outputs {name: array} of an .onnx model (ONNX Runtime) or an engine (TensorRT) on `inputs`.

    Without `inputs`, random data for a model with static shapes (as trtexec does).
    """
    from .runtime.base import random_feed

    with _Opened(model, provider) as runner:
        feed = random_feed(runner.inputs) if inputs is None else inputs
        return runner.infer(feed)


def compare(
    candidate: Any,
    reference: Any,
    data: Any = None,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    per_tensor: bool = False,
    metric: Any = None,
    preprocess: Any = None,
    shapes: Any = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    provider: str = "cpu",
) -> CompareReport:
    """How far `candidate` (an INT8/FP16 model or engine) is from `reference` (the FP32 model).

    The argument order of `onnx2trt compare CANDIDATE REFERENCE` and numpy's
    `assert_allclose(actual, desired)`. Models are paths, ModelProtos, engines or runners.
    `data`: a {input: array} feed, a list of feeds, an array (the only input), or any source
    `calibrate` takes (image list/folder/glob with `preprocess`, .npy/.npz); random static data
    when None. Per output: max_abs, max_rel (relative to the reference's largest magnitude),
    mean_abs, cosine, sqnr_db and pass/fail by |a-b| <= atol + rtol*|b| (see
    `onnx2trt_lib.runtime.compare`). `per_tensor=True` (two ONNX models) adds the SQNR of
    every tensor the candidate quantizes, worst first, in `report.tensors`. `metric` (two ONNX
    models), a function of {output name: all batches' outputs} -> score, is reported for both
    models and their difference in `report.metric` ("reference", "candidate", "drop").
    """
    import dataclasses

    from .runtime import compare as compare_runners
    from .runtime.base import random_feed

    with _Opened(candidate, provider) as runner_a, _Opened(reference, provider) as runner_b:
        feeds = _feeds(
            data,
            runner_b,
            (reference, candidate),
            preprocess=preprocess,
            shapes=shapes,
            batch_size=batch_size,
            max_batches=max_batches,
        )
        if feeds is None:
            feeds = [random_feed(runner_b.inputs)]
        report = compare_runners(runner_a, runner_b, feeds, atol=atol, rtol=rtol)
    if per_tensor or metric is not None:
        from ._io import load_model
        from .errors import UsageError
        from .quant.accuracy import compare as layer_compare

        protos = [_onnx_model(m) for m in (reference, candidate)]
        if any(p is None for p in protos):
            raise UsageError(
                "per_tensor and metric run two ONNX models (e.g. the Q/DQ one against FP32)"
            )
        ref_proto, cand_proto = (load_model(p, check=False) for p in protos)
        layers = layer_compare(ref_proto, cand_proto, feeds, per_tensor=per_tensor, metric=metric)
        report = dataclasses.replace(report, tensors=layers.tensors, metric=dict(layers.metric))
    return report


def inspect(
    path: str | os.PathLike | onnx.ModelProto, *, target: str | None = None
) -> dict[str, Any]:
    """What a file (or ModelProto) holds, as a dict with a "kind": an ONNX model (inputs/outputs
    with dynamic dims, opset, IR, op counts, external data, lint summary for `target`), a
    calibration cache, a ranges JSON, or an engine (from its sidecar)."""
    from .inspection import describe, describe_model

    if not isinstance(path, (str, os.PathLike)):
        return describe_model(path, target=target)
    return describe(path, target=target)


def sample_dir() -> Path:
    """Folder of the bundled sample model and data (read-only: write outputs elsewhere)."""
    from ._sample import sample_dir as _sample_dir

    return _sample_dir()


# ---------------------------------------------------------------- helpers


class _Opened:
    """A runner for a path/ModelProto (closed on exit), or a runner passed in (left open)."""

    def __init__(self, model: Any, provider: str) -> None:
        self.model, self.provider = model, provider
        self.runner: Any = None
        self.owned = False

    def __enter__(self) -> Any:
        if hasattr(self.model, "infer") and hasattr(self.model, "inputs"):
            self.runner = self.model
            return self.runner
        proto = _onnx_model(self.model)
        if proto is not None:
            from .runtime.ort_runner import OrtRunner

            self.runner = OrtRunner(proto, providers=self.provider)
        else:
            from .runtime.trt_runner import TrtRunner

            path = Path(self.model)
            if not path.is_file():
                from .errors import ModelLoadError

                raise ModelLoadError(f"{path}: no such file (expected an .onnx model or an engine)")
            self.runner = TrtRunner(path)
        self.owned = True
        return self.runner

    def __exit__(self, *exc: object) -> None:
        if self.owned and self.runner is not None:
            self.runner.close()


def _onnx_model(model: Any) -> Any:
    """The model itself when it is ONNX (a ModelProto or an .onnx path), else None."""
    if isinstance(model, (str, os.PathLike)):
        return model if Path(model).suffix.lower() == ".onnx" else None
    if type(model).__name__ == "ModelProto":
        return model
    return None


def _feeds(
    data: Any,
    runner: Any,
    models: Iterable[Any],
    **source_options: Any,
) -> list[dict[str, Any]] | None:
    """Feeds for compare: dicts as given, an array for the only input, or a data source read
    with the first ONNX model's input shapes (as calibrate reads it)."""
    import numpy as np

    if data is None:
        return None
    if isinstance(data, Mapping):
        return [dict(data)]
    if isinstance(data, np.ndarray):
        names = [s.name for s in runner.inputs]
        if len(names) != 1:
            from .errors import UsageError

            raise UsageError(
                f"an array was given but the model has {len(names)} inputs ({', '.join(names)}); pass a dict"
            )
        return [{names[0]: data}]
    if isinstance(data, (str, os.PathLike)):
        onnx_model = next((m for m in (_onnx_model(m) for m in models) if m is not None), None)
        if onnx_model is None:
            from .errors import UsageError

            raise UsageError(
                "a data source needs the input shapes of an ONNX model; one of the two must be ONNX"
            )
        from .calib.collect import model_feeds

        return model_feeds(onnx_model, data, **source_options)
    return [dict(feed) for feed in data]

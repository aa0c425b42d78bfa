"""Which TensorRT builds the engine: `tensorrt` 10.x, `tensorrt` 11.x or `tensorrt_rtx`.

All three share the builder/network/parser/config/runtime API used in this package, so the
code is shared and only the few calls that differ live here, each citing its API page:

- precision: TensorRT 10 is weakly typed (BuilderFlag.FP16/INT8 + an INT8 calibrator);
  TensorRT 11 and TensorRT-RTX are strongly typed only (no FP16/INT8 flags, no calibrator),
  so `--fp16/--int8` become graph passes on the ONNX before parsing.
- hardware compatibility: TensorRT's `hardware_compatibility_level`; TensorRT-RTX engines
  are portable across its supported GPUs by default and refuse that setting.

Capabilities are found with `hasattr` on the installed module, not from version numbers.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .. import _optional
from .._lazy import lazy_module
from ..errors import BuildError, MissingDependencyError, UsageError
from .config import BACKEND_CHOICES, BuildConfig

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")  # imported on first use (see _lazy)
log = logging.getLogger(__name__)

# CLI/config name -> importable module, in the order `auto` tries them: full TensorRT first,
# because its engines run on every NVIDIA GPU (TensorRT-RTX targets RTX/consumer GPUs).
_MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
_LABELS = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}

API_PAGES = {
    "tensorrt": "https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/BuilderConfig.html",
    "tensorrt-rtx": "https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/_static/python-api/infer/Core/BuilderConfig.html",
}


@dataclass(frozen=True)
class Backend:
    """An installed TensorRT flavour: its name, version and what its API offers."""

    name: str
    module_name: str
    version: str

    @property
    def trt(self) -> ModuleType:
        return _optional.require(self.module_name, purpose=f"building engines with {self.label}")

    @property
    def label(self) -> str:
        return f"{_LABELS[self.name]} {self.version}"

    @property
    def major(self) -> int:
        try:
            return int(self.version.split(".")[0])
        except ValueError:
            return 0

    @property
    def has_precision_flags(self) -> bool:
        """TensorRT <= 10: BuilderFlag.FP16/INT8 exist (weakly typed networks)."""
        flags = self.trt.BuilderFlag
        return hasattr(flags, "FP16") and hasattr(flags, "INT8")

    @property
    def has_calibrator(self) -> bool:
        return hasattr(self.trt, "IInt8EntropyCalibrator2")

    @property
    def has_timing_cache(self) -> bool:
        """TensorRT-RTX made timing-cache calls no-ops (deprecated in RTX 1.2, see its
        ITimingCache page); full TensorRT loads and saves them
        (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/TimingCache.html)."""
        return self.name != "tensorrt-rtx"

    @property
    def strongly_typed(self) -> bool:
        """True when precision must come from the ONNX graph itself (TensorRT 11, TensorRT-RTX)."""
        return not self.has_precision_flags

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "module": self.module_name, "version": self.version}


def available_backends() -> list[str]:
    """Names of the backends that import here, in `auto` preference order."""
    return [name for name, module in _MODULES.items() if _optional.available(module)]


def detect_backend(name: str = "auto") -> Backend:
    """The backend called `name`, or the first installed one for "auto"."""
    if name not in BACKEND_CHOICES:
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    candidates = list(_MODULES) if name == "auto" else [name]
    for candidate in candidates:
        module_name = _MODULES[candidate]
        if not _optional.available(module_name):
            continue
        module = _optional.require(module_name)
        version = str(getattr(module, "__version__", "0"))
        backend = Backend(candidate, module_name, version)
        if candidate == "tensorrt" and backend.major < 10:
            if name == "auto":
                log.warning("tensorrt %s is older than 10; skipping it", version)
                continue
            raise BuildError(
                f"tensorrt {version} is installed but onnx2trt_lib needs TensorRT 10 or newer"
            )
        if not hasattr(module, "Builder"):  # the PyPI `tensorrt` stub wheel imports but has no API
            if name == "auto":
                continue
            raise MissingDependencyError(
                f"{module_name} imports but has no Builder (a stub wheel?); reinstall {module_name}"
            )
        return backend
    if name == "auto":
        raise MissingDependencyError(
            "no TensorRT is installed: pip install 'onnx2trt_lib[tensorrt]' (TensorRT 10/11) "
            "or 'onnx2trt_lib[rtx]' (TensorRT-RTX)"
        )
    extra = "tensorrt" if name == "tensorrt" else "rtx"
    raise MissingDependencyError(
        f"backend {name!r} needs the {_MODULES[name]} module: pip install 'onnx2trt_lib[{extra}]'"
    )


# package names that carry each module, for `peek_backend` (first found wins)
_DISTRIBUTIONS = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
    "tensorrt-rtx": ("tensorrt-rtx", "tensorrt_rtx"),
}


def peek_backend(name: str = "auto") -> Backend | None:
    """The backend `detect_backend` would most likely pick, from package metadata alone.

    Imports no TensorRT (about 0.1 s and numpy): enough to name an engine-cache entry. None
    when unsure; a wrong guess only costs a cache miss, after which the build detects properly.
    """
    import importlib.util

    if name not in BACKEND_CHOICES:
        return None
    for candidate in list(_MODULES) if name == "auto" else [name]:
        try:
            spec = importlib.util.find_spec(_MODULES[candidate])
        except (ImportError, ValueError):
            return None
        if spec is None:
            continue
        version = _installed_version(spec, _DISTRIBUTIONS[candidate])
        return Backend(candidate, _MODULES[candidate], version) if version else None
    return None


def _installed_version(spec: Any, distributions: tuple[str, ...]) -> str | None:
    """The version in the `<dist>-<version>.dist-info` folder beside the module (a directory
    listing, not importlib.metadata: that one costs as much as the rest of a cache hit)."""
    import re
    from pathlib import Path

    if not spec.origin:
        return None
    site = Path(spec.origin).parent.parent
    names = {re.sub(r"[-_.]+", "_", d).lower() for d in distributions}
    try:
        entries = [p.name for p in site.iterdir() if p.name.endswith(".dist-info")]
    except OSError:
        return None
    for entry in sorted(entries):
        dist, _, version = entry[: -len(".dist-info")].partition("-")
        if dist.lower() in names and version:
            return version
    return None


# ---------------------------------------------------------------- logger


def make_logger(backend: Backend) -> Any:
    """A TensorRT ILogger that forwards to `logging` and keeps error lines for our messages.

    The class is made here, at call time, because subclassing trt.ILogger needs TensorRT
    (ILogger page: .../infer/Core/Logger.html, same in TensorRT 10/11 and TensorRT-RTX).
    """
    trt = backend.trt
    sev = trt.ILogger.Severity
    to_logging = {
        sev.INTERNAL_ERROR: logging.ERROR,
        sev.ERROR: logging.ERROR,
        sev.WARNING: logging.WARNING,
        sev.INFO: logging.DEBUG,
        sev.VERBOSE: logging.DEBUG,
    }
    trt_log = logging.getLogger("onnx2trt_lib.build.trt")

    base: Any = trt.ILogger  # a class of the module loaded at run time

    class _Logger(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            py_level = to_logging.get(severity, logging.DEBUG)
            if py_level >= logging.ERROR:
                self.errors.append(msg)
            trt_log.log(py_level, "%s", msg)

    return _Logger()


# ---------------------------------------------------------------- the branches that differ


def apply_precision_flags(
    backend: Backend, trt_config: Any, config: BuildConfig, model: onnx.ModelProto
) -> list[Any]:
    """TensorRT 10 only: FP16/INT8 builder flags and the entropy calibrator serving our cache.

    Follows IBuilderConfig.set_flag / int8_calibrator (TensorRT 10 Python API,
    https://docs.nvidia.com/deeplearning/tensorrt/10.13.0/_static/python-api/infer/Core/BuilderConfig.html)
    and IInt8EntropyCalibrator2 (.../infer/Int8/EntropyCalibrator2.html): TensorRT reads
    the cache first and then skips its own calibration. On strongly typed backends this
    does nothing: `prepare_onnx_for_precision` already rewrote the ONNX.
    Returns objects that must stay alive until the build ends (the calibrator).
    """
    if not (config.fp16 or config.int8) or backend.strongly_typed:
        return []
    trt = backend.trt
    keep: list[Any] = []
    if config.fp16:
        trt_config.set_flag(trt.BuilderFlag.FP16)
    if config.int8:
        from ..calib.cache import CalibrationCache
        from ..calib.trt_calibrator import entropy_calibrator

        cache = CalibrationCache.from_amax(calibration_amax(model, config), version=backend.version)
        calibrator = entropy_calibrator(cache=cache, trt_module=trt)
        trt_config.set_flag(trt.BuilderFlag.INT8)
        trt_config.int8_calibrator = calibrator
        keep.append(calibrator)
    return keep


def calibration_amax(model: onnx.ModelProto, config: BuildConfig) -> dict[str, float]:
    """Per-tensor amax for INT8: read from `--cache`, or computed now by our own entropy
    calibration on `--data` (onnx2trt_lib.calib, on CPU with ONNX Runtime; shapes from the
    first profile's OPT shapes)."""
    if config.calibration_cache is not None:
        from ..calib.cache import read_cache

        return read_cache(config.calibration_cache).amax
    from ..calib.api import calibrate

    shapes = {r.name: r.opt for r in config.profiles[0].inputs} if config.profiles else None
    log.info("calibrating on %s (no --cache given)", config.calibration_data)
    result = calibrate(model, config.calibration_data, shapes=shapes, preprocess=config.preprocess)
    return dict(result.amax)


def apply_hardware_compatibility(backend: Backend, trt_config: Any, config: BuildConfig) -> None:
    """`hardware_compatibility_level` on TensorRT; TensorRT-RTX refuses it (its engines are portable).

    TensorRT: IBuilderConfig.hardware_compatibility_level with HardwareCompatibilityLevel
    (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/BuilderConfig.html).
    TensorRT-RTX: engines run on every supported GPU unless compute capabilities are set
    (https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/inference-library/cpu-engines.html).
    """
    if config.hardware_compatibility is None:
        return
    if backend.name == "tensorrt-rtx":
        raise UsageError(
            "hardware compatibility is not a TensorRT-RTX option: its engines are already portable "
            "across supported GPUs; drop --hardware-compatibility"
        )
    trt = backend.trt
    level_enum = getattr(trt, "HardwareCompatibilityLevel", None)
    wanted = {"ampere-plus": "AMPERE_PLUS", "same-compute-capability": "SAME_COMPUTE_CAPABILITY"}
    member = (
        getattr(level_enum, wanted[config.hardware_compatibility], None) if level_enum else None
    )
    if member is None or not hasattr(trt_config, "hardware_compatibility_level"):
        raise UsageError(
            f"{backend.label} has no hardware compatibility level {config.hardware_compatibility!r}"
        )
    trt_config.hardware_compatibility_level = member


def engine_target(backend: Backend, config: BuildConfig) -> str:
    """Where the engine runs: "portable" (TensorRT-RTX), "ampere-plus", or the build GPU's "sm_XY"."""
    if backend.name == "tensorrt-rtx":
        return "portable"
    if config.hardware_compatibility == "ampere-plus":
        return "ampere-plus"
    return current_compute_capability() or "unknown"


def current_compute_capability() -> str | None:
    """`sm_90` for the current CUDA device, or None without a GPU/cuda-python."""
    try:
        cudart = _optional.cudart()
        err, device = cudart.cudaGetDevice()
        if int(err) != 0:
            return None
        attr = cudart.cudaDeviceAttr
        err1, major = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device)
        err2, minor = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device)
        if int(err1) or int(err2):
            return None
        return f"sm_{major}{minor}"
    except Exception:  # noqa: BLE001 - no driver, no cuda-python: not an error, just unknown
        return None


# ---------------------------------------------------------------- precision on strongly typed backends

FP16_PASS = "to-fp16"
QDQ_PASS = "insert-qdq"


def prepare_onnx_for_precision(
    model: onnx.ModelProto, config: BuildConfig, backend: Backend
) -> onnx.ModelProto:
    """Carry out `--fp16`/`--int8` on the ONNX itself when the backend is strongly typed.

    TensorRT 11 and TensorRT-RTX build every tensor in the type the network gives it
    (https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html),
    so INT8 means explicit Q/DQ nodes with scales from calibration (pass "insert-qdq") and
    FP16 means casting the rest of the graph (pass "to-fp16", float32 I/O unless `fp16_io`); a
    model below opset 13 is converted first for INT8. On TensorRT 10 the model is
    returned unchanged (builder flags do the work). The input model is never modified.
    """
    if not (config.fp16 or config.int8) or not backend.strongly_typed:
        return model
    passes = []
    if config.int8 and config.calibration_cache is None:
        model = _protected_qdq(model, config)  # converts opset < 13 as `quantize` does
    elif config.int8:
        from .._opset import at_least_opset

        # per-channel QuantizeLinear needs opset 13: convert as `quantize` does
        model, note = at_least_opset(model, 13, "per-channel QuantizeLinear needs it")
        if note:
            log.warning("--int8: %s", note)
        passes.append(_load_pass("insert_qdq", QDQ_PASS, ranges=calibration_amax(model, config)))
        log.warning(
            "int8: Q/DQ from %s is not checked against FP32 (no data); build with --data to "
            "measure and protect it",
            config.calibration_cache,
        )
    if config.fp16:
        # float32 inputs and outputs unless asked (Polygraphy's --fp-to-fp16 keeps them too)
        passes.append(_load_pass("to_fp16", FP16_PASS, keep_io_types=not config.fp16_io))
    if not passes:
        return model
    from ..passes import PassManager

    out, report = PassManager(passes).run(model)
    for line in report.summary_lines():
        log.info("precision: %s", line)
    return out


def _protected_qdq(model: onnx.ModelProto, config: BuildConfig) -> onnx.ModelProto:
    """--int8 --data on a strongly typed backend: calibrate, ranges (quant.range_choice), and the Q/DQ model
    checked against FP32 on the same data and protected, as `calibrate --qdq` writes it."""
    from ..calib.api import calibrate
    from ..quant.api import quantize_calibrated

    shapes = {r.name: r.opt for r in config.profiles[0].inputs} if config.profiles else None
    log.info("calibrating on %s (no --cache given)", config.calibration_data)
    result = calibrate(
        model,
        config.calibration_data,
        shapes=shapes,
        preprocess=config.preprocess,
        keep_outputs=True,  # the check below compares with them (no FP32 run of its own)
    )
    quantized = quantize_calibrated(
        model, result, config.calibration_data, shapes=shapes, preprocess=config.preprocess
    )
    report = quantized.protection
    if report is None:
        return quantized.model
    for k, line in enumerate(report.summary_lines()):  # agreement and INT8 share always shown
        (log.warning if k < 2 or not report.met else log.info)("int8: %s", line)
    return quantized.model


def _load_pass(module: str, name: str, **options: Any) -> Any:
    """The pass called `name` from onnx2trt_lib.passes.<module>, imported only when needed."""
    import importlib

    flag = "--int8" if name == QDQ_PASS else "--fp16"
    try:
        mod = importlib.import_module(f"onnx2trt_lib.passes.{module}")
    except ImportError as exc:
        raise MissingDependencyError(
            f"{flag} on a strongly typed TensorRT needs the {name!r} pass "
            f"(onnx2trt_lib.passes.{module}), which is not available ({exc})"
        ) from exc
    cls = next(
        (
            obj
            for obj in vars(mod).values()
            if inspect.isclass(obj) and getattr(obj, "name", None) == name
        ),
        None,
    )
    if cls is None:
        raise MissingDependencyError(f"onnx2trt_lib.passes.{module} defines no pass named {name!r}")
    return cls(**options)

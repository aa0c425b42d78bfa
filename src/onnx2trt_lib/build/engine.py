"""Network -> engine bytes -> engine file (+ JSON sidecar) -> engine, and `inspect_engine`.

The sidecar `<engine>.json` records what the engine was built from and for (backend and
version, target GPU or "portable", I/O, profiles, BuildConfig, ONNX sha256, engine sha256),
so `load_engine` can say *why* an engine will not load before TensorRT fails obscurely.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from .._io import (
    OutputError,
    check_output_path,
    check_regular_file,
    load_json_limited,
    memory_limit,
    output_set,
    recover_output_sets,
    write_bytes_atomic,
    write_text_atomic,
)
from ..errors import BuildError, UsageError
from .backends import (
    Backend,
    apply_hardware_compatibility,
    apply_precision_flags,
    current_compute_capability,
    detect_backend,
    engine_target,
    make_logger,
)
from .config import BuildConfig, format_shape
from .network import ParsedNetwork, TensorInfo, describe_inputs, dtype_name

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "onnx2trt-engine"
SIDECAR_VERSION = 1
MAX_SIDECAR_BYTES = 16 * 2**20  # a real sidecar is a few KiB

# progress(phase, step, total): TensorRT's build phases, reported as they advance.
ProgressCallback = Callable[[str, int, int], None]


class EngineFileError(BuildError):
    """An engine file or sidecar that is missing, corrupt, foreign, or for another backend/GPU."""


# ---------------------------------------------------------------- build


def engine_bytes_from_network(
    parsed: ParsedNetwork, config: BuildConfig, *, progress: ProgressCallback | None = None
) -> bytes:
    """Build a serialized engine from a parsed network with `config`'s settings.

    Uses only IBuilderConfig calls the three backends share (memory pool, optimization
    level, timing cache, profiles, VERSION_COMPATIBLE); the rest goes through backends.py.
    """
    backend, trt = parsed.backend, parsed.backend.trt
    trt_config = parsed.builder.create_builder_config()
    _add_profiles(parsed, trt_config, config)
    if config.workspace is not None:
        trt_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace)
    if config.builder_optimization_level is not None:
        trt_config.builder_optimization_level = config.builder_optimization_level
    if config.version_compatible:
        flag = getattr(trt.BuilderFlag, "VERSION_COMPATIBLE", None)
        if flag is None:
            raise UsageError(
                f"{backend.label} has no version-compatible engines; drop --version-compatible"
            )
        trt_config.set_flag(flag)
    apply_hardware_compatibility(backend, trt_config, config)
    keep_alive = apply_precision_flags(backend, trt_config, config, parsed.model)
    timing_cache = None
    timing_cache_path = config.timing_cache
    if timing_cache_path is not None and not backend.has_timing_cache:
        log.warning(
            "%s ignores timing caches; --timing-cache %s not used",
            backend.label,
            timing_cache_path,
        )
    elif timing_cache_path is not None:
        check_output_path(timing_cache_path)  # a bad path fails now, not after the slow build
        timing_cache = _load_timing_cache(trt_config, timing_cache_path)
    monitor = _progress_monitor(backend, progress) if progress is not None else None
    if monitor is not None and hasattr(trt_config, "progress_monitor"):
        trt_config.progress_monitor = monitor

    log.info("building %s with %s", parsed.source, backend.label)
    serialized = parsed.builder.build_serialized_network(parsed.network, trt_config)
    del keep_alive
    if monitor is not None and monitor.interrupted:
        # Ctrl-C arrived inside a progress callback: TensorRT was asked to cancel; report it as one
        raise KeyboardInterrupt
    if serialized is None:
        detail = (
            "; ".join(" ".join(e.split()) for e in parsed.logger.errors[-3:]) or "no error message"
        )
        raise BuildError(f"{parsed.source}: {backend.label} failed to build the engine: {detail}")
    if timing_cache is not None and timing_cache_path is not None:
        _save_timing_cache(trt_config, timing_cache_path)
    return bytes(serialized)


def _save_timing_cache(trt_config: Any, path: str) -> None:
    """Write the timing cache; a failure only warns, since the finished engine matters more."""
    try:
        write_bytes_atomic(path, bytes(trt_config.get_timing_cache().serialize()))
    except (OSError, OutputError) as exc:
        log.warning("timing cache not saved to %s: %s", path, exc)
        return
    log.info("timing cache saved to %s", path)


def _add_profiles(parsed: ParsedNetwork, trt_config: Any, config: BuildConfig) -> None:
    """One optimization profile per `config.profiles`; every dynamic input must be covered."""
    inputs = {t.name: t for t in parsed.inputs}
    shape_inputs = _shape_tensor_inputs(parsed)
    dynamic = [t for t in inputs.values() if t.is_dynamic]
    if not config.profiles:
        if shape_inputs:
            raise UsageError(
                _shape_input_needs_values(inputs[shape_inputs[0]], "the build has no shape profile")
            )
        if dynamic:
            first = dynamic[0]
            raise UsageError(
                f"input {first.name!r} has dynamic shape {format_shape(first.shape)} and needs a shape range: "
                f"--shapes {first.name}:MIN/OPT/MAX (e.g. {_example(first)})"
            )
        return
    for index, profile in enumerate(config.profiles):
        where = f"profile {index}" if len(config.profiles) > 1 else "the shape profile"
        for name in profile.names:
            if name not in inputs:
                raise UsageError(
                    f"{where} names input {name!r}, which {parsed.source} does not have; "
                    f"inputs are {describe_inputs(list(inputs.values()))}"
                )
        trt_profile = parsed.builder.create_optimization_profile()
        for tensor in inputs.values():
            rng = profile.get(tensor.name)
            if tensor.name in shape_inputs:
                _set_shape_input_values(parsed, trt_profile, tensor, rng, where)
                continue
            if rng is None:
                if tensor.is_dynamic:
                    raise UsageError(
                        f"input {tensor.name!r} has dynamic shape {format_shape(tensor.shape)} but {where} "
                        f"gives it no range; add {tensor.name}:MIN/OPT/MAX (e.g. {_example(tensor)})"
                    )
                continue
            _check_range_fits(tensor, rng, where)
            try:
                trt_profile.set_shape(tensor.name, rng.min, rng.opt, rng.max)
            except (
                RuntimeError,
                TypeError,
                ValueError,
            ) as exc:  # e.g. sizes too large for TensorRT
                raise UsageError(
                    f"{where}: {parsed.backend.label} refuses the range {format_shape(rng.min)}/"
                    f"{format_shape(rng.opt)}/{format_shape(rng.max)} for input {tensor.name!r}: "
                    f"{' '.join(str(exc).split())[:200]}"
                ) from None
        _check_named_dims(parsed, profile, where)
        trt_config.add_optimization_profile(trt_profile)


def _shape_tensor_inputs(parsed: ParsedNetwork) -> list[str]:
    """Inputs TensorRT reads as shape tensors (e.g. Reshape's shape): a profile gives their *values*."""
    network = parsed.network
    return [
        network.get_input(i).name
        for i in range(network.num_inputs)
        if getattr(network.get_input(i), "is_shape_tensor", False)
    ]


def _shape_input_needs_values(tensor: TensorInfo, why: str) -> str:
    count = _value_count(tensor)
    example = "x".join(["1"] * count)
    return (
        f"input {tensor.name!r} is a shape tensor ({count} value(s)) and {why}: give its values as trtexec does, "
        f"--shapes {tensor.name}:MIN/OPT/MAX with {count} value(s) each (e.g. {tensor.name}:{example}/{example}/{example})"
    )


def _value_count(tensor: TensorInfo) -> int:
    count = 1
    for dim in tensor.shape:
        count *= max(dim, 0)
    return count


def _set_shape_input_values(
    parsed: ParsedNetwork, trt_profile: Any, tensor: TensorInfo, rng: Any, where: str
) -> None:
    """IOptimizationProfile.set_shape_input: for a shape tensor, the range is of its values (trtexec's reading)."""
    if rng is None:
        raise UsageError(_shape_input_needs_values(tensor, f"{where} gives it no values"))
    if len(rng.min) != _value_count(tensor):
        raise UsageError(
            _shape_input_needs_values(tensor, f"{where} gives {len(rng.min)} value(s)")
        )
    try:
        trt_profile.set_shape_input(tensor.name, rng.min, rng.opt, rng.max)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UsageError(
            f"{where}: {parsed.backend.label} refuses the values {format_shape(rng.min)}/{format_shape(rng.opt)}/"
            f"{format_shape(rng.max)} for shape input {tensor.name!r}: {' '.join(str(exc).split())[:200]}"
        ) from None


def _check_named_dims(parsed: ParsedNetwork, profile: Any, where: str) -> None:
    """Axes sharing one ONNX dim name (dim_param) must get equal ranges: TensorRT treats them as one."""
    graph_inputs = {i.name: i for i in parsed.model.graph.input}
    axes: dict[str, list[tuple[str, int]]] = {}
    for name in profile.names:
        value_info = graph_inputs.get(name)
        if value_info is None:
            continue
        for axis, dim in enumerate(value_info.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") and dim.dim_param:
                axes.setdefault(dim.dim_param, []).append((name, axis))
    for dim_name, users in axes.items():
        ranges = {}
        for name, axis in users:
            rng = profile.get(name)
            if rng is not None and axis < len(rng.min):
                ranges[(name, axis)] = (rng.min[axis], rng.opt[axis], rng.max[axis])
        if len(set(ranges.values())) > 1:
            (a, ra), (b, rb) = _first_differing(ranges)
            raise UsageError(
                f"{where}: input {a[0]!r} axis {a[1]} and input {b[0]!r} axis {b[1]} share the ONNX dimension name "
                f"{dim_name!r}, so TensorRT needs them equal, but the ranges are {'/'.join(map(str, ra))} and "
                f"{'/'.join(map(str, rb))}; give equal sizes or rename the dimensions in the model"
            )


def _first_differing(ranges: dict) -> tuple:
    """The first entry and the first entry whose range differs from it."""
    items = list(ranges.items())
    first = items[0]
    other = next(item for item in items[1:] if item[1] != first[1])
    return first, other


def _check_range_fits(tensor: TensorInfo, rng: Any, where: str) -> None:
    if len(rng.min) != len(tensor.shape):
        raise UsageError(
            f"{where}: input {tensor.name!r} has {len(tensor.shape)} dimensions "
            f"({format_shape(tensor.shape)}) but the range gives {len(rng.min)}"
        )
    for axis, dim in enumerate(tensor.shape):
        if dim >= 0 and not rng.min[axis] == rng.opt[axis] == rng.max[axis] == dim:
            raise UsageError(
                f"{where}: input {tensor.name!r} axis {axis} is fixed at {dim} in the model "
                f"({format_shape(tensor.shape)}), the range says {rng.min[axis]}/{rng.opt[axis]}/{rng.max[axis]}"
            )


def _example(tensor: TensorInfo) -> str:
    lo = "x".join("1" if d < 0 else str(d) for d in tensor.shape)
    hi = "x".join("8" if d < 0 else str(d) for d in tensor.shape)
    return f"{tensor.name}:{lo}/{hi}/{hi}"


def _load_timing_cache(trt_config: Any, path: str) -> Any:
    """ITimingCache from `path` when it exists, else empty (it is written after the build)."""
    data = b""
    if Path(path).is_file():
        data = Path(path).read_bytes()
    cache = trt_config.create_timing_cache(data)
    if cache is None:
        raise BuildError(
            f"timing cache {path} is not readable by this TensorRT; delete it or use another path"
        )
    if not trt_config.set_timing_cache(cache, False):
        raise BuildError(
            f"timing cache {path} does not match this TensorRT/GPU; delete it or use another path"
        )
    log.info("timing cache %s (%d bytes loaded)", path, len(data))
    return cache


def _progress_monitor(backend: Backend, progress: ProgressCallback) -> Any:
    """IProgressMonitor subclass made at call time (TensorRT 10+/RTX: .../infer/Core/ProgressMonitor.html)."""
    trt = backend.trt
    if not hasattr(trt, "IProgressMonitor"):
        return None
    totals: dict[str, int] = {}
    base: Any = trt.IProgressMonitor  # a class of the module loaded at run time

    class _Monitor(base):
        """Forwards progress; a Ctrl-C delivered in a callback cancels the build (step_complete -> False)."""

        def __init__(self) -> None:
            base.__init__(self)
            self.interrupted = False

        def _report(self, phase: str, step: int, total: int) -> None:
            try:
                _safe(progress, phase, step, total)
            except KeyboardInterrupt:
                self.interrupted = True

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            totals[phase_name] = num_steps
            self._report(phase_name, 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            self._report(phase_name, step + 1, totals.get(phase_name, 0))
            return not self.interrupted

        def phase_finish(self, phase_name: str) -> None:
            self._report(phase_name, totals.get(phase_name, 0), totals.get(phase_name, 0))

    return _Monitor()


def _safe(progress: ProgressCallback, phase: str, step: int, total: int) -> None:
    try:
        progress(phase, step, total)
    except Exception:  # a display bug must not abort a build that runs inside TensorRT
        log.debug("progress callback failed", exc_info=True)


# ---------------------------------------------------------------- sidecar


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(engine_path)}.json")


def make_sidecar(
    parsed: ParsedNetwork,
    config: BuildConfig,
    engine: bytes,
    *,
    onnx_sha256: str,
    onnx_source: str | None = None,
) -> dict[str, Any]:
    """The JSON record saved beside an engine (see the module docstring)."""
    backend = parsed.backend
    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "backend": backend.to_dict(),
        "target": engine_target(backend, config),
        "inputs": [t.to_dict() for t in parsed.inputs],
        "outputs": [t.to_dict() for t in parsed.outputs],
        "profiles": [p.to_dict() for p in config.profiles],
        "config": config.to_dict(),
        "onnx_sha256": onnx_sha256,
        "onnx_source": onnx_source,
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "engine_size": len(engine),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "onnx2trt_lib_version": __version__,
    }


def read_sidecar(engine_path: str | os.PathLike) -> dict[str, Any]:
    """Parse `<engine>.json`; EngineFileError when missing, not JSON, or not ours."""
    recover_output_sets(engine_path)  # a build killed mid-publish: finish its set first
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineFileError(
            f"{path}: no sidecar beside the engine (was it built by onnx2trt?); rebuild it with onnx2trt build "
            "or load with check_sidecar=False"
        )
    try:
        data = load_json_limited(
            path, limit=MAX_SIDECAR_BYTES, what="engine sidecar", error=EngineFileError
        )
    except EngineFileError as exc:
        raise EngineFileError(f"{exc}; rebuild the engine") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise EngineFileError(
            f"{path}: not an onnx2trt engine sidecar (no format {SIDECAR_FORMAT!r})"
        )
    if data.get("format_version") != SIDECAR_VERSION:
        raise EngineFileError(
            f"{path}: sidecar format version {data.get('format_version')!r} is not {SIDECAR_VERSION}; "
            "rebuild the engine with this onnx2trt"
        )
    problem = _sidecar_structure_problem(data)
    if problem:
        raise EngineFileError(f"{path}: damaged engine sidecar ({problem}); rebuild the engine")
    return data


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    )


def _sidecar_structure_problem(data: dict[str, Any]) -> str | None:
    """What in a parsed sidecar does not have the shape `make_sidecar` writes (None: all fine).

    check_sidecar, inspection_lines and the CLI index into these fields, so a hand-edited or
    corrupt sidecar is refused here, once, instead of crashing them with a KeyError/TypeError.
    """
    for key in ("backend", "config"):
        if key in data and not isinstance(data[key], dict):
            return f"{key!r} is not an object"
    for kind in ("inputs", "outputs"):
        tensors = data.get(kind, [])
        if not isinstance(tensors, list):
            return f"{kind!r} is not a list"
        for index, tensor in enumerate(tensors):
            if not (
                isinstance(tensor, dict)
                and isinstance(tensor.get("name"), str)
                and isinstance(tensor.get("dtype"), str)
                and _is_shape(tensor.get("shape"))
            ):
                return f"{kind}[{index}] is not {{name, dtype, shape: [ints]}}"
    profiles = data.get("profiles", [])
    if not isinstance(profiles, list):
        return "'profiles' is not a list"
    for index, profile in enumerate(profiles):
        if not isinstance(profile, list) or not all(
            isinstance(r, dict)
            and isinstance(r.get("name"), str)
            and all(_is_shape(r.get(k)) for k in ("min", "opt", "max"))
            for r in profile
        ):
            return f"profiles[{index}] is not a list of {{name, min, opt, max: [ints]}}"
    return None


def save_engine(path: str | os.PathLike, engine: bytes, sidecar: dict[str, Any]) -> Path:
    """Write the engine and its sidecar as one set (`output_set`): both temps first, then both
    renames under the folder lock, so an interrupt or a concurrent build never leaves an engine
    beside another engine's sidecar; the previous pair stays until the new one is complete."""
    target = check_output_path(path)
    side = sidecar_path(target)
    text = json.dumps(sidecar, indent=2, sort_keys=False) + "\n"
    with output_set():
        write_bytes_atomic(target, engine)
        write_text_atomic(side, text)
    log.info("saved %s (%d bytes) and %s", target, len(engine), side.name)
    return target


def check_sidecar(
    sidecar: dict[str, Any], backend: Backend, engine: bytes | None = None
) -> list[str]:
    """What stops this engine loading here: one human-readable line per mismatch."""
    problems = []
    built = sidecar.get("backend", {})
    if built.get("name") != backend.name:
        problems.append(
            f"built with {built.get('name')!r} but the backend here is {backend.name!r}"
        )
    elif built.get("version") != backend.version:
        problems.extend(_version_problem(sidecar, backend))
    if engine is not None and sidecar.get("engine_sha256") != hashlib.sha256(engine).hexdigest():
        problems.append("the engine file does not match its sidecar's sha256 (replaced or corrupt)")
    target = str(sidecar.get("target", ""))
    if target.startswith("sm_"):
        here = current_compute_capability()
        if here is not None and here != target:
            problems.append(f"built for GPU {target} but this GPU is {here}")
    return problems


def _version_problem(sidecar: dict[str, Any], backend: Backend) -> list[str]:
    """Why an engine from another version of the same backend will not load (empty: it will).

    A VERSION_COMPATIBLE TensorRT engine loads in the TensorRT that built it and any later one
    (never an older one); TensorRT-RTX engines load only in the release that built them.
    https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/advanced.html#version-compatibility
    """
    built = str(sidecar.get("backend", {}).get("version"))
    if is_version_compatible(sidecar) and backend.name == "tensorrt":
        old, new = _version_key(built), _version_key(backend.version)
        if old is not None and new is not None and new >= old:
            return []
        return [
            (
                f"built with {backend.name} {built} as version-compatible but {backend.version} is installed "
                "(version-compatible engines load only in the same or a later TensorRT)"
            )
        ]
    return [
        (
            f"built with {backend.name} {built} but {backend.version} is installed "
            "(engines only load in the TensorRT version that built them)"
        )
    ]


def _version_key(version: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return None


def is_version_compatible(sidecar: dict[str, Any] | None) -> bool:
    """The sidecar says the engine was built with VERSION_COMPATIBLE (it then embeds the lean runtime)."""
    config = (sidecar or {}).get("config", {})
    return isinstance(config, dict) and config.get("version_compatible") is True


# ---------------------------------------------------------------- load


@dataclass
class LoadedEngine:
    """A deserialized engine with the runtime that owns it and its sidecar (None if unchecked)."""

    engine: Any
    runtime: Any
    backend: Backend
    sidecar: dict[str, Any] | None


def engine_from_bytes(
    data: bytes, backend: Backend | str = "auto", *, host_code: bool = False
) -> LoadedEngine:
    """Deserialize engine bytes; EngineFileError with TensorRT's reason when it refuses.

    `host_code=True` trusts the engine to run the lean runtime it embeds: a VERSION_COMPATIBLE
    plan (built without EXCLUDE_LEAN_RUNTIME) deserializes only with
    `IRuntime.engine_host_code_allowed` set. Pass it only for engines you trust.
    """
    if isinstance(backend, str):
        backend = detect_backend(backend)
    trt = backend.trt
    logger = make_logger(backend)
    runtime = trt.Runtime(logger)
    if host_code and hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = True
    _check_engine_header(runtime, backend, data)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        from ..runtime.gpu import gpu_message

        no_gpu = gpu_message(f"loading a {backend.label} engine")
        if no_gpu is not None:  # TensorRT would say "CUDA driver version is insufficient"
            raise EngineFileError(no_gpu)
        detail = " ".join(logger.errors[0].split()) if logger.errors else "no error message"
        raise EngineFileError(f"{backend.label} cannot deserialize the engine: {detail[:400]}")
    return LoadedEngine(engine, runtime, backend, None)


def _check_engine_header(runtime: Any, backend: Backend, data: bytes) -> None:
    """IRuntime.get_engine_validity (TensorRT-RTX, newer TensorRT): name the reason up front.

    https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/_static/python-api/infer/Core/Runtime.html
    """
    if not hasattr(runtime, "get_engine_validity") or not hasattr(
        backend.trt, "EngineInvalidityDiagnostics"
    ):
        return
    size = int(getattr(runtime, "engine_header_size", 0) or 0)
    if len(data) < max(size, 1):
        raise EngineFileError(
            f"engine is {len(data)} bytes, shorter than a {backend.label} engine header"
        )
    _validity, diagnostics = runtime.get_engine_validity(data[:size] if size else data)
    diag = backend.trt.EngineInvalidityDiagnostics
    reasons = {
        "MALFORMED_ENGINE": "not a valid engine for this backend (corrupt, or from another TensorRT flavour)",
        "VERSION_MISMATCH": "built by another TensorRT version",
        "UNSUPPORTED_CC": "built for GPUs other than this one",
        "OLD_CUDA_DRIVER": "the CUDA driver is too old",
        "OLD_CUDA_RUNTIME": "the CUDA runtime is too old",
        "INSUFFICIENT_GPU_MEMORY": "not enough GPU memory",
        "CUDA_ERROR": "no usable CUDA GPU here",
    }
    found = [
        text
        for name, text in reasons.items()
        if hasattr(diag, name) and int(diagnostics) & int(getattr(diag, name))
    ]
    if found:
        raise EngineFileError(f"{backend.label} refuses the engine: {'; '.join(found)}")


def load_engine(
    path: str | os.PathLike,
    backend: Backend | str = "auto",
    *,
    check_sidecar_first: bool = True,
    allow_host_code: bool = False,
) -> LoadedEngine:
    """Read an engine file, check its sidecar against the installed backend, deserialize it.

    A version-compatible engine embeds host code (the lean runtime) that runs when it loads; it
    is deserialized only with `allow_host_code=True` (CLI: --allow-host-code), an explicit
    trust decision: the sidecar is a file beside the engine and decides nothing by itself.
    """
    engine_path = Path(path)
    if not engine_path.is_file():
        raise EngineFileError(f"{engine_path}: no such engine file")
    data = read_engine_bytes(engine_path)
    if not data:
        raise EngineFileError(f"{engine_path}: empty file, not an engine")
    sidecar = None
    if check_sidecar_first:
        sidecar = read_sidecar(engine_path)
        if isinstance(backend, str) and backend == "auto":
            backend = str(sidecar.get("backend", {}).get("name", "auto"))
            if backend not in ("tensorrt", "tensorrt-rtx"):
                backend = "auto"
    if isinstance(backend, str):
        backend = detect_backend(backend)
    if sidecar is not None:
        problems = check_sidecar(sidecar, backend, data)
        if problems:
            raise EngineFileError(
                f"{engine_path}: will not load here: {'; '.join(problems)}; rebuild it here"
            )
    if is_version_compatible(sidecar) and not allow_host_code:
        raise EngineFileError(
            f"{engine_path}: is a version-compatible engine, which embeds host code (the lean runtime) "
            "that runs when it loads; pass --allow-host-code (allow_host_code=True) only for engines you trust"
        )
    try:
        loaded = engine_from_bytes(data, backend, host_code=allow_host_code)
    except EngineFileError as exc:
        raise EngineFileError(f"{engine_path}: {exc}") from None
    loaded.sidecar = sidecar
    return loaded


def read_engine_bytes(path: Path) -> bytes:
    """An engine file's bytes: a regular file no larger than `memory_limit()` (an 8 GB file on a
    machine that cannot hold it is a one-line error, not a MemoryError half-way through)."""
    check_regular_file(path, what="engine file", error=EngineFileError)
    size = path.stat().st_size
    if size > memory_limit():
        raise EngineFileError(
            f"{path}: {size} bytes is over the {memory_limit()} byte limit for an engine here "
            "(half the memory); is this the right file?"
        )
    return path.read_bytes()


def inspect_engine(path: str | os.PathLike) -> dict[str, Any]:
    """What `onnx2trt inspect ENGINE` shows: the sidecar, its checks, and the engine inspector if loadable."""
    engine_path = Path(path)
    if not engine_path.is_file():
        raise EngineFileError(f"{engine_path}: no such engine file")
    data = read_engine_bytes(engine_path)
    report: dict[str, Any] = {
        "path": str(engine_path),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        sidecar = read_sidecar(engine_path)
    except EngineFileError as exc:
        sidecar = None
        report["sidecar_error"] = str(exc)
    report["sidecar"] = sidecar
    backend_name = (sidecar or {}).get("backend", {}).get("name", "auto")
    try:
        backend = detect_backend(
            backend_name if backend_name in ("tensorrt", "tensorrt-rtx") else "auto"
        )
    except Exception as exc:  # noqa: BLE001 - no TensorRT here: the sidecar is all there is to show
        report["problems"] = []
        report["engine"] = {"loaded": False, "reason": str(exc)}
        return report
    report["problems"] = check_sidecar(sidecar, backend, data) if sidecar else []
    if is_version_compatible(sidecar):
        # inspecting must not run code from the file: the embedded lean runtime runs only in load_engine
        report["engine"] = {
            "loaded": False,
            "reason": "version-compatible engine: it embeds host code (the lean "
            "runtime), which inspect does not run; load_engine does",
        }
        return report
    try:
        loaded = engine_from_bytes(data, backend)
    except Exception as exc:  # noqa: BLE001
        report["engine"] = {"loaded": False, "reason": str(exc)}
        return report
    report["engine"] = _engine_details(loaded)
    return report


def _engine_details(loaded: LoadedEngine) -> dict[str, Any]:
    """I/O from the engine and per-layer JSON from its EngineInspector (.../infer/Core/EngineInspector.html)."""
    engine, backend = loaded.engine, loaded.backend
    trt = backend.trt
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        tensors.append(
            {
                "name": name,
                "mode": str(engine.get_tensor_mode(name)).split(".")[-1].lower(),
                "dtype": dtype_name(backend, engine.get_tensor_dtype(name)),
                "shape": [int(d) for d in engine.get_tensor_shape(name)],
            }
        )
    details: dict[str, Any] = {
        "loaded": True,
        "num_layers": int(engine.num_layers),
        "num_optimization_profiles": int(engine.num_optimization_profiles),
        "io": tensors,
    }
    try:
        inspector = engine.create_engine_inspector()
        details["layers"] = json.loads(
            inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        )
    except Exception as exc:  # noqa: BLE001
        details["layers_error"] = str(exc)
    return details


# Leading bytes of serialized engines: TensorRT-RTX writes "vtrt" (seen on 1.7); full TensorRT
# plans begin "ftrt" (TensorRT 8-10). A sidecar beside the file is the reliable sign.
_ENGINE_MAGIC = (b"vtrt", b"ftrt")


def is_engine_artifact(path: str | os.PathLike) -> bool:
    """True for an engine file (sidecar beside it, or a known magic) or an engine sidecar."""
    p = Path(path)
    if not p.is_file():
        return False
    if sidecar_path(p).is_file():
        return True
    with open(p, "rb") as handle:
        head = handle.read(4096)
    return head[:4] in _ENGINE_MAGIC or _is_sidecar_head(p, head)


def _is_sidecar_head(path: Path, head: bytes) -> bool:
    return path.suffix == ".json" and f'"format": "{SIDECAR_FORMAT}"'.encode() in head


def engine_path_for(path: str | os.PathLike) -> Path:
    """The engine a path stands for: itself, or the engine beside a `<engine>.json` sidecar.

    A sidecar whose engine is missing still stands for it, so the error names the engine.
    """
    p = Path(path)
    if p.suffix == ".json" and not sidecar_path(p).is_file():
        if p.with_suffix("").is_file():
            return p.with_suffix("")
        if p.is_file():
            with open(p, "rb") as handle:
                if _is_sidecar_head(p, handle.read(4096)):
                    return p.with_suffix("")
    return p


def inspection_lines(report: dict[str, Any]) -> list[str]:
    """`inspect_engine`'s report as plain text lines for the CLI."""
    side = report.get("sidecar") or {}
    lines = [
        f"{report['path']}: TensorRT engine, {report['size']} bytes, sha256 {report['sha256'][:16]}..."
    ]
    if side:
        backend = side.get("backend", {})
        config = side.get("config", {})
        precision = "+".join(p for p in ("fp16", "int8") if config.get(p)) or "fp32"
        if is_version_compatible(side):
            precision += ", version-compatible"
        lines.append(
            f"  built with {backend.get('name')} {backend.get('version')}, target {side.get('target')}, "
            f"{precision}, {side.get('created')}"
        )
        lines.append(
            f"  from ONNX sha256 {str(side.get('onnx_sha256'))[:16]}... ({side.get('onnx_source')})"
        )
        for kind in ("inputs", "outputs"):
            for t in side.get(kind, []):
                lines.append(
                    f"  {kind[:-1]:<6} {t['name']}  {t['dtype']}  {format_shape(t['shape'])}"
                )
        for index, profile in enumerate(side.get("profiles", [])):
            ranges = ", ".join(
                f"{r['name']}:{format_shape(r['min'])}/{format_shape(r['opt'])}/{format_shape(r['max'])}"
                for r in profile
            )
            lines.append(f"  profile {index}: {ranges}")
    else:
        lines.append(f"  no sidecar: {report.get('sidecar_error', 'unknown')}")
    lines.extend(f"  problem: {p}" for p in report.get("problems", []))
    engine = report.get("engine", {})
    if engine.get("loaded"):
        lines.append(
            f"  engine loads here: {engine['num_layers']} layers, "
            f"{engine['num_optimization_profiles']} profile(s)"
        )
    else:
        lines.append(f"  engine not loaded here: {engine.get('reason', 'unknown')}")
    return lines

"""Shared checks for pass tests: ONNX Runtime equivalence and the TensorRT-RTX parser's verdict.

Both helpers are plain functions and also fixtures of the same name (tests in this folder
ask for them as arguments; pytest imports every `conftest.py` as a module named
`conftest`, so importing from here by name is not reliable).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest

ModelLike = onnx.ModelProto | str | os.PathLike


def _model_bytes(model: ModelLike) -> bytes:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    return Path(model).read_bytes()


def run_ort_outputs(model: ModelLike, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run `model` on CPU with every ORT graph optimisation off; outputs by name."""
    ort = pytest.importorskip("onnxruntime")
    ort.set_default_logger_severity(
        3
    )  # no per-session warnings (deprecated attributes etc.) in test logs
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(_model_bytes(model), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def assert_same_outputs(
    model_a: ModelLike, model_b: ModelLike, feeds: Mapping[str, np.ndarray], atol: float = 1e-5
) -> float:
    """Assert both models give the same outputs (same names, shapes, dtypes; max |a-b| <= atol).

    `atol=0` demands bit-identical results (use it for integer/gather graphs). NaNs must
    sit at the same places. Returns the largest absolute difference seen, for reports.
    """
    out_a = run_ort_outputs(model_a, feeds)
    out_b = run_ort_outputs(model_b, feeds)
    assert list(out_a) == list(out_b), f"output names differ: {list(out_a)} vs {list(out_b)}"
    worst = 0.0
    for name, a in out_a.items():
        b = out_b[name]
        assert a.shape == b.shape, f"output {name!r}: shape {a.shape} vs {b.shape}"
        assert a.dtype == b.dtype, f"output {name!r}: dtype {a.dtype} vs {b.dtype}"
        if a.size == 0:
            continue
        if np.issubdtype(a.dtype, np.floating):
            nan_a, nan_b = np.isnan(a), np.isnan(b)
            assert np.array_equal(nan_a, nan_b), f"output {name!r}: NaNs at different places"
            diff = float(
                np.max(
                    np.abs(a[~nan_a].astype(np.float64) - b[~nan_b].astype(np.float64)), initial=0.0
                )
            )
        else:
            diff = float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
        assert diff <= atol, f"output {name!r}: max abs diff {diff:.3g} > atol {atol:.3g}"
        worst = max(worst, diff)
    return worst


def _default_profile(
    network, dynamic_range: tuple[int, int, int]
) -> dict[str, tuple[tuple[int, ...], ...]]:
    """min/opt/max per network input: static dims as they are, dynamic (-1) dims from `dynamic_range`."""
    shapes = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if all(d >= 0 for d in dims):
            continue
        shapes[tensor.name] = tuple(tuple(d if d >= 0 else r for d in dims) for r in dynamic_range)
    return shapes


def rtx_parse_and_build(
    model: ModelLike,
    *,
    build: bool = True,
    shapes: Mapping[str, Sequence[Sequence[int]]] | None = None,
    dynamic_range: tuple[int, int, int] = (1, 16, 32),
) -> tuple[bool, list[str]]:
    """Parse `model` with the TensorRT-RTX OnnxParser and (if `build`) build a serialized plan on CPU.

    Returns (ok, errors): ok is True when parsing succeeded and, if asked, the builder
    returned a non-empty plan; errors holds the parser's messages (node and description)
    or a note that the build failed. Dynamic input dims get one optimisation profile:
    `shapes` maps input name -> (min, opt, max) shapes; inputs not listed use
    `dynamic_range` (min, opt, max) for every dynamic dim. Skips the test when
    tensorrt_rtx is absent.
    """
    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(_model_bytes(model)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(f"node {err.node_name()!r} ({err.node_operator()}): {err.desc()}")
        return False, errors or ["parser returned False without errors"]
    if not build:
        return True, []
    config = builder.create_builder_config()
    profile_shapes = _default_profile(network, dynamic_range)
    profile_shapes.update({k: tuple(tuple(s) for s in v) for k, v in (shapes or {}).items()})
    if profile_shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile_shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None or plan.nbytes == 0:
        return False, ["builder returned no serialized plan (see the TensorRT-RTX log above)"]
    return True, []


@pytest.fixture(name="assert_same_outputs")
def _assert_same_outputs_fixture():
    """The `assert_same_outputs(model_a, model_b, feeds, atol)` helper, as a fixture."""
    return assert_same_outputs


@pytest.fixture(name="rtx_parse_and_build")
def _rtx_parse_and_build_fixture():
    """The `rtx_parse_and_build(model, *, build=True, shapes=None)` helper, as a fixture."""
    return rtx_parse_and_build

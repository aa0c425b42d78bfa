"""TrtRunner without TensorRT or a GPU: I/O specs, shapes, grow-only buffers, binding, loading errors.

A fake engine (conftest.py) implements the documented TensorRT calls; a fake allocator
stands in for cudaMalloc. The same logic runs against real CUDA in test_cuda_gpu.py.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from onnx2trt_lib.errors import MissingDependencyError, ModelLoadError, RuntimeExecutionError
from onnx2trt_lib.runtime.base import check_array
from onnx2trt_lib.runtime.trt_runner import IOBinding, load_trt_engine, specs_from_engine


class FakeBuffer:
    next_ptr = 0x1000

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = FakeBuffer.next_ptr
        FakeBuffer.next_ptr += 0x100000
        self.closed = False

    def close(self) -> None:
        self.closed = True


def two_input_engine(fake_engine):
    return fake_engine(
        [
            ("images", "INPUT", "HALF", (-1, 3, -1, -1)),
            ("scale", "INPUT", "INT32", (2,)),
            ("logits", "OUTPUT", "FLOAT", (-1, 10)),
            ("mask", "OUTPUT", "BOOL", (-1, 1, -1, -1)),
        ],
        profiles={"images": ((1, 3, 32, 32), (4, 3, 64, 64), (8, 3, 128, 128))},
        output_shape=lambda name, ins: (
            (ins["images"][0], 10)
            if name == "logits"
            else (ins["images"][0], 1, *ins["images"][2:])
        ),
    )


def test_specs_from_engine(fake_engine) -> None:
    inputs, outputs = specs_from_engine(two_input_engine(fake_engine))
    images, scale = inputs
    assert (images.name, images.dtype, images.shape) == (
        "images",
        np.dtype(np.float16),
        (None, 3, None, None),
    )
    assert images.min_shape == (1, 3, 32, 32) and images.max_shape == (8, 3, 128, 128)
    assert (scale.dtype, scale.shape, scale.min_shape) == (np.dtype(np.int32), (2,), None)
    assert [(o.name, o.dtype) for o in outputs] == [
        ("logits", np.dtype(np.float32)),
        ("mask", np.dtype(np.bool_)),
    ]


def test_unsupported_dtype_is_a_clear_error(fake_engine) -> None:
    engine = fake_engine([("x", "INPUT", "BF16", (1,)), ("y", "OUTPUT", "FLOAT", (1,))])
    with pytest.raises(
        RuntimeExecutionError, match="tensor 'x' has type BF16, which has no numpy equivalent"
    ):
        specs_from_engine(engine)


def test_shapes_set_only_when_changed_and_outputs_resolved(fake_engine) -> None:
    engine = two_input_engine(fake_engine)
    ctx = engine.create_execution_context()
    binding = IOBinding(engine, ctx, FakeBuffer)
    out = binding.set_input_shapes({"images": (2, 3, 64, 48), "scale": (2,)})
    assert out == {"logits": (2, 10), "mask": (2, 1, 64, 48)}
    calls = [c for c in ctx.calls if c[0] == "set_input_shape"]
    assert calls == [
        ("set_input_shape", "images", (2, 3, 64, 48)),
        ("set_input_shape", "scale", (2,)),
    ]
    binding.set_input_shapes({"images": (2, 3, 64, 48), "scale": (2,)})
    assert len([c for c in ctx.calls if c[0] == "set_input_shape"]) == 2  # unchanged: no calls
    binding.set_input_shapes({"images": (4, 3, 64, 48), "scale": (2,)})
    assert [c for c in ctx.calls if c[0] == "set_input_shape"][-1] == (
        "set_input_shape",
        "images",
        (4, 3, 64, 48),
    )


def test_shape_outside_profile(fake_engine) -> None:
    engine = two_input_engine(fake_engine)
    binding = IOBinding(engine, engine.create_execution_context(), FakeBuffer, where="m.engine")
    with pytest.raises(
        RuntimeExecutionError,
        match=r"m.engine: no optimization profile takes input shapes "
        r"images \[9, 3, 64, 64\] \(profile 0: images \[1, 3, 32, 32\]\.\.\[8, 3, 128, 128\]\)",
    ):
        binding.set_input_shapes({"images": (9, 3, 64, 64), "scale": (2,)})
    # the same is caught before TensorRT from the specs, with advice
    spec = binding.inputs[0]
    with pytest.raises(
        RuntimeExecutionError,
        match=r"outside the engine's profile min \[1, 3, 32, 32\] .. max \[8, 3, 128, 128\]; "
        "rebuild with a wider profile",
    ):
        check_array(np.zeros((1, 3, 16, 64), np.float16), spec, "m.engine")
    with pytest.raises(RuntimeExecutionError, match="dtype float32, the model expects float16"):
        check_array(np.zeros((1, 3, 32, 32), np.float32), spec, "m.engine")


def test_data_dependent_output_shape_is_refused(fake_engine) -> None:
    engine = fake_engine(
        [("x", "INPUT", "FLOAT", (4,)), ("nz", "OUTPUT", "INT64", (-1,))],
        output_shape=lambda name, ins: (-1,),
    )
    binding = IOBinding(engine, engine.create_execution_context(), FakeBuffer)
    with pytest.raises(RuntimeExecutionError, match="output 'nz' has a data-dependent shape"):
        binding.set_input_shapes({"x": (4,)})


def test_buffers_grow_only_and_addresses_rebound_only_on_change(fake_engine) -> None:
    engine = two_input_engine(fake_engine)
    ctx = engine.create_execution_context()
    binding = IOBinding(engine, ctx, FakeBuffer)
    sizes = []
    for batch, h in [(2, 64), (2, 64), (1, 32), (8, 128), (4, 64)]:
        binding.set_input_shapes({"images": (batch, 3, h, h), "scale": (2,)})
        for name in ("images", "scale", "logits", "mask"):
            binding.ensure_buffer(name)
        sizes.append({n: b.nbytes for n, b in binding.buffers.items()})
        assert binding.buffers["images"].nbytes >= batch * 3 * h * h * 2
        assert ctx.addresses == {n: b.ptr for n, b in binding.buffers.items()}
    # 4 tensors at first size + 3 regrown at batch 8 (scale is static) = 7
    assert binding.allocations == 7
    assert sizes[2] == sizes[0] and sizes[4] == sizes[3]  # smaller shapes reuse the larger buffers
    address_calls = [c for c in ctx.calls if c[0] == "set_tensor_address"]
    assert len(address_calls) == 7  # one per allocation, none for reuse
    old = list(binding.buffers.values())
    binding.close()
    assert all(b.closed for b in old) and not binding.buffers


def test_external_pointer_binding(fake_engine) -> None:
    engine = fake_engine([("x", "INPUT", "FLOAT", (2,)), ("y", "OUTPUT", "FLOAT", (2,))])
    ctx = engine.create_execution_context()
    binding = IOBinding(engine, ctx, FakeBuffer)
    binding.bind("x", 0xDEAD00)
    binding.bind("x", 0xDEAD00)
    assert ctx.addresses["x"] == 0xDEAD00
    assert len([c for c in ctx.calls if c[0] == "set_tensor_address"]) == 1


def test_load_engine_object_passthrough_and_missing_file(fake_engine, tmp_path) -> None:
    engine = two_input_engine(fake_engine)
    assert load_trt_engine(engine) == (engine, None)
    with pytest.raises(ModelLoadError, match="no such engine file"):
        load_trt_engine(tmp_path / "missing.engine")


def test_engine_file_goes_through_build_load_engine(fake_engine, tmp_path, monkeypatch) -> None:
    engine = two_input_engine(fake_engine)
    seen = []

    def load_engine(path):
        seen.append(path)
        return engine

    module = types.ModuleType("onnx2trt_lib.build.engine")
    module.load_engine = load_engine
    try:
        import onnx2trt_lib.build  # noqa: F401
    except ImportError:
        monkeypatch.setitem(
            sys.modules, "onnx2trt_lib.build", types.ModuleType("onnx2trt_lib.build")
        )
    monkeypatch.setitem(sys.modules, "onnx2trt_lib.build.engine", module)
    path = tmp_path / "m.engine"
    path.write_bytes(b"x")
    loaded, _ = load_trt_engine(path)
    assert loaded is engine and seen == [path]
    module.load_engine = lambda p: (
        engine,
        {"sidecar": True},
    )  # a (engine, metadata) tuple works too
    assert load_trt_engine(path)[0] is engine
    module.load_engine = lambda p: "not an engine"
    with pytest.raises(
        RuntimeExecutionError, match="load_engine returned str, not a TensorRT engine"
    ):
        load_trt_engine(path)


def test_foreign_engine_bytes_clear_error() -> None:
    try:
        load_trt_engine(b"this is not an engine" * 10)
    except MissingDependencyError as exc:  # no TensorRT of any kind installed
        assert "pip install" in str(exc)
    except RuntimeExecutionError as exc:
        assert "cannot deserialize this engine" in str(
            exc
        ) and "rebuild it with `onnx2trt build`" in str(exc)
    else:  # pragma: no cover
        pytest.fail("garbage bytes deserialized")
    with pytest.raises(RuntimeExecutionError, match="unknown TensorRT backend 'trt9'"):
        load_trt_engine(b"x", backend="trt9")


def test_runner_without_gpu_says_so(fake_engine) -> None:
    from onnx2trt_lib.runtime import TrtRunner, cuda

    if cuda.gpu_available():
        pytest.skip("a GPU is present: covered by test_cuda_gpu.py")
    engine = fake_engine([("x", "INPUT", "FLOAT", (2,)), ("y", "OUTPUT", "FLOAT", (2,))])
    with pytest.raises((RuntimeExecutionError, MissingDependencyError), match="cuda|CUDA"):
        TrtRunner(engine)

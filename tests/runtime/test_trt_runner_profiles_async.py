"""TrtRunner on a fake engine and fake CUDA: optimization-profile selection and back-to-back infer_async.

The fake CUDA (conftest.make_fake_cuda) runs queued copies and kernels only when the host
synchronizes, so a result that read shared staging buffers too late shows the wrong numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnx2trt_lib.errors import RuntimeExecutionError
from onnx2trt_lib.runtime.base import check_array
from onnx2trt_lib.runtime.trt_runner import IOBinding, TrtRunner, specs_from_engine

# profile 0: batch 1..4 at width 32..64; profile 1: batch 5..8 at width 64..128
TWO_PROFILES = [
    {"x": ((1, 3, 32), (2, 3, 64), (4, 3, 64))},
    {"x": ((5, 3, 64), (6, 3, 64), (8, 3, 128))},
]


class FakeBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes, self.ptr = nbytes, id(self)

    def close(self) -> None:
        pass


def doubling_engine(fake_engine, fake_cuda=None, profiles=TWO_PROFILES):
    """y = 2 * x, float32, dynamic shape; executes on fake CUDA memory when `fake_cuda` is given."""

    def execute(ctx, stream_handle):
        if fake_cuda is None:
            return True
        x_ptr, y_ptr, shape = (
            ctx.addresses["x"],
            ctx.addresses["y"],
            ctx.input_shapes["x"],
        )  # launch-time args
        fake_cuda.enqueue(
            stream_handle,
            lambda: fake_cuda.write(y_ptr, 2 * fake_cuda.read(x_ptr, shape, np.float32)),
        )
        return True

    return fake_engine(
        [("x", "INPUT", "FLOAT", (-1, 3, -1)), ("y", "OUTPUT", "FLOAT", (-1, 3, -1))],
        profiles=profiles,
        on_execute=execute,
    )


def test_specs_cover_every_profile(fake_engine) -> None:
    engine = doubling_engine(fake_engine)
    (x,), _ = specs_from_engine(engine)
    assert (x.min_shape, x.max_shape) == ((1, 3, 32), (8, 3, 128))
    check_array(
        np.zeros((6, 3, 100), np.float32), x, "m.engine"
    )  # inside profile 1: not refused up front
    (x0,), _ = specs_from_engine(engine, profile=0)
    assert (x0.min_shape, x0.max_shape) == ((1, 3, 32), (4, 3, 64))


def test_binding_selects_the_profile_that_holds_the_shapes(fake_engine) -> None:
    engine = doubling_engine(fake_engine)
    ctx = engine.create_execution_context()
    binding = IOBinding(engine, ctx, FakeBuffer, where="m.engine")
    assert binding.set_input_shapes({"x": (6, 3, 100)}, stream=77) == {"y": (6, 3, 100)}
    assert ctx.calls[:2] == [
        ("set_optimization_profile_async", 1, 77),
        ("set_input_shape", "x", (6, 3, 100)),
    ]
    assert ctx.active_optimization_profile == 1 and binding.profile == 1
    ctx.calls.clear()
    assert binding.set_input_shapes({"x": (2, 3, 40)}, stream=77) == {"y": (2, 3, 40)}
    assert ctx.calls == [
        ("set_optimization_profile_async", 0, 77),
        ("set_input_shape", "x", (2, 3, 40)),
    ]
    ctx.calls.clear()
    binding.set_input_shapes({"x": (3, 3, 40)}, stream=77)  # same profile: no switch
    assert ctx.calls == [("set_input_shape", "x", (3, 3, 40))]


def test_shapes_no_profile_takes_list_every_profile(fake_engine) -> None:
    engine = doubling_engine(fake_engine)
    binding = IOBinding(engine, engine.create_execution_context(), FakeBuffer, where="m.engine")
    with pytest.raises(
        RuntimeExecutionError,
        match=(
            r"m\.engine: no optimization profile takes input shapes x \[2, 3, 128\] "
            r"\(profile 0: x \[1, 3, 32\]\.\.\[4, 3, 64\]; profile 1: x \[5, 3, 64\]\.\.\[8, 3, 128\]\)"
        ),
    ):
        binding.set_input_shapes({"x": (2, 3, 128)})


def test_single_profile_engine_never_switches(fake_engine) -> None:
    engine = doubling_engine(fake_engine, profiles={"x": ((1, 3, 8), (2, 3, 8), (4, 3, 8))})
    ctx = engine.create_execution_context()
    IOBinding(engine, ctx, FakeBuffer).set_input_shapes({"x": (4, 3, 8)})
    assert [c[0] for c in ctx.calls] == ["set_input_shape"]


def test_runner_runs_a_batch_inside_the_second_profile(fake_engine, fake_cuda) -> None:
    engine = doubling_engine(fake_engine, fake_cuda)
    with TrtRunner(engine, name="m.engine") as runner:
        x = np.arange(6 * 3 * 100, dtype=np.float32).reshape(6, 3, 100)
        np.testing.assert_array_equal(runner.infer({"x": x})["y"], 2 * x)
        ctx = engine.contexts[0]
        assert ("set_optimization_profile_async", 1, runner.stream.ptr) in ctx.calls
        small = np.ones((2, 3, 40), np.float32)
        np.testing.assert_array_equal(runner.infer({"x": small})["y"], 2 * small)


def test_two_infer_async_in_a_row_keep_their_own_outputs(fake_engine, fake_cuda) -> None:
    engine = doubling_engine(fake_engine, fake_cuda)
    runner = TrtRunner(engine, name="m.engine")
    first_x = np.full((2, 3, 40), 1.0, np.float32)
    second_x = np.full((2, 3, 40), 5.0, np.float32)  # same shape: the same staging buffers
    first = runner.infer_async({"x": first_x})
    second = runner.infer_async({"x": second_x})
    np.testing.assert_array_equal(first.wait()["y"], 2 * first_x)
    np.testing.assert_array_equal(second.wait()["y"], 2 * second_x)
    assert first.done() and second.done()
    third = runner.infer_async({"x": first_x + 1})
    fourth = runner.infer_async(
        {"x": np.full((6, 3, 64), 3.0, np.float32)}
    )  # another profile, new buffers
    np.testing.assert_array_equal(fourth.wait()["y"], 6.0)
    np.testing.assert_array_equal(third.wait()["y"], 2 * (first_x + 1))
    last = runner.infer_async({"x": second_x})
    runner.close()  # a result not yet waited for survives close()
    np.testing.assert_array_equal(last.wait()["y"], 2 * second_x)

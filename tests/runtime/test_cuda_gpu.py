"""runtime.cuda on a real GPU: buffers, copies of every dtype, stream ordering, graphs, zero-copy, leaks.

Everything marked `gpu` skips (with the reason) when cuda-python or a CUDA device is absent,
as on CI. The first two tests run everywhere cuda-python imports: they check that CUDA
errors become exceptions naming the call.
"""

from __future__ import annotations

import gc
import itertools

import numpy as np
import pytest

from onnx2trt_lib.errors import RuntimeExecutionError

cuda_bindings = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed")

from onnx2trt_lib.runtime import cuda  # noqa: E402

HAVE_GPU = cuda.gpu_available()
_skip_without_gpu = pytest.mark.skipif(
    not HAVE_GPU, reason="no CUDA device/driver visible to cuda-python"
)


def gpu(test):  # the `gpu` marker plus the skip, one decorator
    return pytest.mark.gpu(_skip_without_gpu(test))


DTYPES = [
    np.bool_,
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
]


def test_check_turns_cuda_errors_into_exceptions_naming_call_and_error() -> None:
    rt = cuda._rt()
    with pytest.raises(
        cuda.CudaError, match=r"^cudaMalloc failed: cudaErrorMemoryAllocation \(out of memory\)$"
    ) as info:
        cuda.check((rt.cudaError_t.cudaErrorMemoryAllocation, None), "cudaMalloc")
    assert isinstance(info.value, RuntimeExecutionError)
    assert info.value.call == "cudaMalloc" and info.value.error_name == "cudaErrorMemoryAllocation"
    assert cuda.check((rt.cudaError_t.cudaSuccess, 7), "x") == 7
    assert cuda.check((rt.cudaError_t.cudaSuccess, 1, 2), "x") == (1, 2)


def test_real_failing_call_raises() -> None:
    if HAVE_GPU:
        with pytest.raises(cuda.CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
            cuda.DeviceBuffer(1 << 60)
    else:
        with pytest.raises(cuda.CudaError, match="cudaGetDeviceCount failed"):
            cuda.device_count()


def _random(dtype: type, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    return (rng.standard_normal(shape) * 1e3).astype(dt)


@gpu
def test_device_and_pinned_buffers() -> None:
    with cuda.DeviceBuffer(4096) as dev, cuda.HostBuffer(4096) as host:
        assert dev.ptr != 0 and host.ptr != 0
        pinned = host.array((1024,), np.float32)
        assert cuda.is_pinned(pinned)
        assert not cuda.is_pinned(np.zeros(1024, np.float32))
        dev.memset(0)
        cuda.synchronize()
        np.testing.assert_array_equal(dev.to_host((1024,), np.float32), np.zeros(1024, np.float32))
        with pytest.raises(RuntimeExecutionError, match="do not fit"):
            dev.copy_from_host(np.zeros(2048, np.float32))
    assert dev.closed and host.closed
    with pytest.raises(RuntimeExecutionError, match="already freed"):
        _ = dev.ptr
    dev.close()  # idempotent


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype_pinned_pageable_and_device_to_device(dtype: type) -> None:
    rng = np.random.default_rng(0)
    src = _random(dtype, (3, 257), rng)  # odd size: no alignment luck
    with (
        cuda.Stream() as stream,
        cuda.DeviceBuffer(src.nbytes) as a,
        cuda.DeviceBuffer(src.nbytes) as b,
        cuda.HostBuffer(src.nbytes) as pin_in,
        cuda.HostBuffer(src.nbytes) as pin_out,
    ):
        staged = pin_in.array(src.shape, src.dtype)
        staged[...] = src
        a.copy_from_host(staged, stream=stream)  # pinned, async
        b.copy_from_device(a, stream=stream)
        out = pin_out.array(src.shape, src.dtype)
        b.copy_to_host(out, stream=stream)
        pageable = np.empty_like(src)
        a.copy_to_host(pageable, stream=stream)  # pageable
        stream.synchronize()
        np.testing.assert_array_equal(out, src)
        np.testing.assert_array_equal(pageable, src)
        np.testing.assert_array_equal(a.view(src.shape, src.dtype).to_host(), src)


@gpu
def test_stream_event_ordering_across_streams() -> None:
    n = 16 << 20  # 64 MiB of float32: long enough that an unordered read would see zeros
    src = np.arange(n, dtype=np.float32)
    with (
        cuda.Stream() as producer,
        cuda.Stream() as consumer,
        cuda.DeviceBuffer(src.nbytes) as a,
        cuda.DeviceBuffer(src.nbytes) as b,
        cuda.HostBuffer(src.nbytes) as pin,
    ):
        staged = pin.array(src.shape, src.dtype)
        staged[...] = src
        b.memset(0, stream=consumer)
        consumer.synchronize()
        start = producer.record(cuda.Event())
        a.copy_from_host(staged, stream=producer)
        b.copy_from_device(a, stream=producer)
        done = producer.record(cuda.Event())
        consumer.wait(done)
        result = np.empty_like(src)
        with cuda.HostBuffer(src.nbytes) as pin_out:
            out = pin_out.array(src.shape, src.dtype)
            b.copy_to_host(out, stream=consumer)
            finished = consumer.record()
            finished.synchronize()
            assert finished.query() and done.query()
            result[...] = out
        assert start.elapsed_ms(done) > 0
    np.testing.assert_array_equal(result[:: 1 << 16], src[:: 1 << 16])
    np.testing.assert_array_equal(result, src)


@gpu
def test_cuda_graph_replays_a_copy_chain() -> None:
    n = 1 << 16
    rng = np.random.default_rng(1)
    with (
        cuda.Stream() as stream,
        cuda.HostBuffer(4 * n) as pin_in,
        cuda.HostBuffer(4 * n) as pin_out,
        cuda.CudaGraph() as graph,
    ):
        bufs = [cuda.DeviceBuffer(4 * n) for _ in range(4)]
        x, y = pin_in.array((n,), np.float32), pin_out.array((n,), np.float32)
        with graph.capture(stream):
            bufs[0].copy_from_host(x, stream=stream)
            for src, dst in itertools.pairwise(bufs):
                dst.copy_from_device(src, stream=stream)
            bufs[-1].copy_to_host(y, stream=stream)
        assert graph.ready
        for _ in range(5):
            data = rng.standard_normal(n).astype(np.float32)
            x[...] = data
            y[...] = 0
            graph.launch(stream)
            stream.synchronize()
            np.testing.assert_array_equal(y, data)
        for b in bufs:
            b.close()


@gpu
def test_failed_capture_raises_and_leaves_stream_usable() -> None:
    with cuda.Stream() as stream, cuda.DeviceBuffer(64) as a, cuda.CudaGraph() as graph:
        with pytest.raises(cuda.CudaError):
            with graph.capture(stream):
                stream.synchronize()  # illegal while capturing
        assert not graph.ready
        a.memset(1, stream=stream)
        stream.synchronize()
        assert a.to_host((64,), np.uint8).tolist() == [1] * 64


@gpu
def test_zero_copy_torch() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    t = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
    torch.cuda.synchronize()
    view = cuda.device_view(t)
    assert view.ptr == t.data_ptr() and view.shape == (3, 4) and view.dtype == np.float32
    np.testing.assert_array_equal(view.to_host(), t.cpu().numpy())
    dl = cuda._view_from_dlpack(t)
    assert dl.ptr == t.data_ptr() and dl.shape == (3, 4) and dl.dtype == np.float32
    # our buffer seen by torch without a copy
    with cuda.DeviceBuffer(48) as buf:
        buf.memset(0)
        cuda.synchronize()
        ours = torch.as_tensor(buf.view((3, 4), np.float32), device="cuda")
        assert ours.data_ptr() == buf.ptr
        ours += 5
        torch.cuda.synchronize()
        np.testing.assert_array_equal(
            buf.to_host((3, 4), np.float32), np.full((3, 4), 5, np.float32)
        )
    # non-contiguous: copied on the device, values kept, original untouched
    tt = t.t()
    view_t = cuda.device_view(tt)
    assert view_t.ptr != t.data_ptr()
    np.testing.assert_array_equal(view_t.to_host(), tt.cpu().numpy())
    assert (
        cuda.is_device_array(t)
        and not cuda.is_device_array(t.cpu())
        and not cuda.is_device_array(np.zeros(2))
    )


@gpu
def test_zero_copy_cupy() -> None:
    cp = pytest.importorskip("cupy")
    a = cp.arange(10, dtype=cp.int32)
    cp.cuda.runtime.deviceSynchronize()
    view = cuda.device_view(a)
    assert view.ptr == a.data.ptr and view.shape == (10,) and view.dtype == np.int32
    np.testing.assert_array_equal(view.to_host(), np.arange(10, dtype=np.int32))
    with cuda.DeviceBuffer(40) as buf:
        buf.memset(0)
        cuda.synchronize()
        alias = cp.asarray(buf.view((10,), np.int32))
        assert alias.data.ptr == buf.ptr
        alias[...] = a * 3
        cp.cuda.runtime.deviceSynchronize()
        np.testing.assert_array_equal(buf.to_host((10,), np.int32), np.arange(10) * 3)
    strided = a[::2]
    np.testing.assert_array_equal(cuda.device_view(strided).to_host(), np.arange(0, 10, 2))


@gpu
def test_no_leak_over_10000_alloc_free_cycles() -> None:
    cuda.synchronize()
    gc.collect()
    free_before, _ = cuda.mem_get_info()
    for i in range(10_000):
        if i % 2:
            with cuda.DeviceBuffer(1 << 20):
                pass
        else:
            buf = cuda.DeviceBuffer(1 << 20)  # freed by garbage collection (weakref.finalize)
            del buf
    for _ in range(1_000):
        with cuda.HostBuffer(1 << 16), cuda.Stream(), cuda.Event():
            pass
    gc.collect()
    cuda.synchronize()
    free_after, _ = cuda.mem_get_info()
    print(
        f"leak check: free before {free_before} after {free_after} delta {free_before - free_after} bytes"
    )
    assert free_before - free_after < (2 << 20), (free_before, free_after)


@gpu
def test_trt_runner_path_on_gpu_with_fake_engine(fake_engine) -> None:
    """TrtRunner's real CUDA path: staging, binding, execute on the stream, graphs; TensorRT faked.

    The fake's execute_async_v3 enqueues a device copy input -> output on the given stream,
    so correct outputs prove addresses, ordering and the graph replay.
    """
    from onnx2trt_lib.runtime.trt_runner import TrtRunner

    def copy_kernel(ctx, stream_handle):
        nbytes = int(np.prod(ctx.input_shapes["x"])) * 4
        cuda.call(
            "cudaMemcpyAsync",
            ctx.addresses["y"],
            ctx.addresses["x"],
            nbytes,
            cuda._memcpy_kind("cudaMemcpyDeviceToDevice"),
            stream_handle,
        )
        return True

    engine = fake_engine(
        [("x", "INPUT", "FLOAT", (-1, 8)), ("y", "OUTPUT", "FLOAT", (-1, 8))],
        profiles={"x": ((1, 8), (4, 8), (16, 8))},
        on_execute=copy_kernel,
    )
    rng = np.random.default_rng(2)
    for graph in (False, True):
        with TrtRunner(engine, cuda_graph=graph) as runner:
            for batch in (2, 2, 2, 16, 3):
                x = rng.standard_normal((batch, 8)).astype(np.float32)
                out = runner.infer({"x": x})
                np.testing.assert_array_equal(out["y"], x)
            pending = runner.infer_async({"x": x})
            np.testing.assert_array_equal(pending.wait()["y"], x)
            assert runner._binding.allocations == 4  # x and y: at batch 2, grown once at 16; 3 fits
            if graph:
                assert runner._graph.ready
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        with TrtRunner(engine) as runner:
            xt = torch.randn(4, 8, device="cuda")
            out = runner.infer_async({"x": xt}, outputs_on_device=True).wait()
            assert runner._context.addresses["x"] == xt.data_ptr()  # zero-copy input
            yt = torch.as_tensor(out["y"], device="cuda")
            torch.cuda.synchronize()
            assert torch.equal(yt, xt)


@gpu
def test_trt_runner_mixes_device_and_host_inputs_under_graphs(fake_engine) -> None:
    """A device-array run rebinds the input to the caller's pointer; the next host run must rebind ours."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    from onnx2trt_lib.runtime.trt_runner import TrtRunner

    def double(ctx, stream_handle):  # y = x * 2 via torch on TensorRT's stream
        n = int(np.prod(ctx.input_shapes["x"]))
        with torch.cuda.stream(torch.cuda.ExternalStream(stream_handle)):
            x = torch.as_tensor(
                cuda.DeviceView(ctx.addresses["x"], (n,), np.dtype(np.float32)), device="cuda"
            )
            y = torch.as_tensor(
                cuda.DeviceView(ctx.addresses["y"], (n,), np.dtype(np.float32)), device="cuda"
            )
            torch.mul(x, 2, out=y)
        return True

    engine = fake_engine(
        [("x", "INPUT", "FLOAT", (4, 8)), ("y", "OUTPUT", "FLOAT", (4, 8))], on_execute=double
    )
    rng = np.random.default_rng(5)
    producer = torch.cuda.Stream()
    with TrtRunner(engine, cuda_graph=True) as runner:
        for step in range(6):
            x = rng.standard_normal((4, 8)).astype(np.float32)
            if step % 3 == 1:
                with torch.cuda.stream(producer):
                    xt = torch.from_numpy(x).to("cuda", non_blocking=False)
                out = runner.infer_async({"x": xt}, stream=producer.cuda_stream).wait()
            else:
                out = runner.infer({"x": x})
            np.testing.assert_array_equal(out["y"], x * 2)
        assert runner._graph.ready


@gpu
def test_trt_runner_back_to_back_async_and_second_profile_on_gpu(fake_engine) -> None:
    """Real streams and events: each of two queued runs keeps its own outputs, also under graphs,
    and a batch only the second optimization profile takes runs (the switch is queued on our stream)."""
    from onnx2trt_lib.runtime.trt_runner import TrtRunner

    def slow_copy(ctx, stream_handle):  # y = x by device copies: no kernel needed
        n = int(np.prod(ctx.input_shapes["x"])) * 4
        for _ in range(50):  # keep the GPU busy so the host really runs ahead of it
            cuda.call(
                "cudaMemcpyAsync",
                ctx.addresses["y"],
                ctx.addresses["x"],
                n,
                cuda._memcpy_kind("cudaMemcpyDeviceToDevice"),
                stream_handle,
            )
        return True

    engine = fake_engine(
        [("x", "INPUT", "FLOAT", (-1, 256)), ("y", "OUTPUT", "FLOAT", (-1, 256))],
        profiles=[{"x": ((1, 256), (2, 256), (4, 256))}, {"x": ((5, 256), (8, 256), (64, 256))}],
        on_execute=slow_copy,
    )
    rng = np.random.default_rng(7)
    for graph in (False, True):
        with TrtRunner(engine, cuda_graph=graph) as runner:
            for batch in (2, 2, 48, 48, 3):
                xs = [rng.standard_normal((batch, 256)).astype(np.float32) for _ in range(3)]
                pending = [runner.infer_async({"x": x}) for x in xs]
                for x, result in zip(xs, pending, strict=True):
                    np.testing.assert_array_equal(result.wait()["y"], x)
            calls = [
                c for c in engine.contexts[-1].calls if c[0] == "set_optimization_profile_async"
            ]
            assert calls == [
                ("set_optimization_profile_async", 1, runner.stream.ptr),
                ("set_optimization_profile_async", 0, runner.stream.ptr),
            ]

"""The interface every runner shares, and the input checks they all apply.

A runner maps `{input name: array}` to `{output name: numpy array}`; `inputs`/`outputs`
describe the named I/O with dtypes and shapes (None for a dynamic dimension), so
`compare()` and the CLI never need to know which backend they talk to.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RuntimeExecutionError

Dim = int | None  # None: dynamic (a symbolic ONNX dim, -1 in TensorRT)


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: its dtype and shape; `min_shape`/`max_shape` from a TensorRT profile."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]
    min_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None

    @property
    def is_static(self) -> bool:
        return all(d is not None for d in self.shape)

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"


class PendingResult:
    """What `infer_async` returns: `wait()` gives the outputs once the work is done."""

    def __init__(self, outputs: dict[str, Any] | None = None, *, waiter: Any = None) -> None:
        self._outputs = outputs
        self._waiter = waiter

    def done(self) -> bool:
        if self._outputs is not None:
            return True
        return bool(self._waiter.done())

    def wait(self) -> dict[str, Any]:
        if self._outputs is None:
            self._outputs = self._waiter.wait()
            self._waiter = None
        return self._outputs


class Runner(abc.ABC):
    """Base of TrtRunner and OrtRunner. Use as a context manager to free resources promptly."""

    name: str = "runner"

    @property
    @abc.abstractmethod
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    @abc.abstractmethod
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    @abc.abstractmethod
    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run once; returns a fresh numpy array per output (callers may keep or modify them)."""

    def infer_async(self, feed: Mapping[str, Any], *, stream: Any = None) -> PendingResult:
        """Queue a run (on `stream` where the backend has streams); the default runs synchronously."""
        return PendingResult(self.infer(feed))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free sessions, buffers, streams. Idempotent."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def input_spec(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise RuntimeExecutionError(
            f"{self.name}: no input named {name!r}; inputs are {[s.name for s in self.inputs]}"
        )

    def __repr__(self) -> str:
        ins = "; ".join(s.describe() for s in self.inputs)
        outs = "; ".join(s.describe() for s in self.outputs)
        return f"{type(self).__name__}({self.name!r}, inputs=[{ins}], outputs=[{outs}])"


def in_float_type(value: Any, dtype: Any) -> np.ndarray:
    """Float data in a float input's type (an FP16 input gets the same data, rounded, not an error);
    anything else, or no known type (None), as it is."""
    arr = np.asarray(value)
    if (
        dtype is not None
        and arr.dtype.kind == "f"
        and np.dtype(dtype).kind == "f"
        and arr.dtype != dtype
    ):
        return arr.astype(dtype)
    return arr


def check_feed_names(feed: Mapping[str, Any], specs: tuple[TensorSpec, ...], where: str) -> None:
    """Unknown and missing input names, both listed in one message."""
    if not isinstance(feed, Mapping):
        raise RuntimeExecutionError(
            f"{where}: inputs must be a dict {{name: array}}, got {type(feed).__name__}"
        )
    expected = [s.name for s in specs]
    unknown = sorted(set(feed) - set(expected))
    missing = [n for n in expected if n not in feed]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        if missing:
            parts.append(f"missing input(s) {missing}")
        raise RuntimeExecutionError(
            f"{where}: {' and '.join(parts)}; the model's inputs are {expected}"
        )


def check_array(value: Any, spec: TensorSpec, where: str) -> np.ndarray:
    """A C-contiguous numpy array of the spec's dtype and a compatible shape, else a clear error.

    Non-contiguous arrays are copied (the caller's array is never modified); dtypes are not
    converted silently, because a float64 feed to a float32 model is usually a bug upstream.
    """
    if hasattr(value, "__cuda_array_interface__") and not isinstance(value, np.ndarray):
        raise RuntimeExecutionError(
            f"{where}: input {spec.name!r} is a GPU array; this runner takes host arrays (use .cpu()/.get())"
        )
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise RuntimeExecutionError(
            f"{where}: input {spec.name!r} is not an array ({type(value).__name__}): {exc}"
        ) from None
    if arr.dtype.kind in "OUSV":
        raise RuntimeExecutionError(
            f"{where}: input {spec.name!r} is not a numeric array (got {type(value).__name__} of {arr.dtype}); "
            f"pass a numpy array of {spec.dtype.name}"
        )
    check_dtype_shape(arr.dtype, arr.shape, spec, where)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


def check_dtype_shape(
    dtype: np.dtype, shape: tuple[int, ...], spec: TensorSpec, where: str
) -> None:
    if np.dtype(dtype) != spec.dtype:
        raise RuntimeExecutionError(
            f"{where}: input {spec.name!r} has dtype {np.dtype(dtype).name}, the model expects {spec.dtype.name}; "
            f"convert it with .astype(np.{spec.dtype.name})"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(spec.shape) or any(
        d is not None and d != s for d, s in zip(spec.shape, shape, strict=False)
    ):
        raise RuntimeExecutionError(
            f"{where}: input {spec.name!r} has shape {list(shape)}, the model expects "
            f"[{','.join('?' if d is None else str(d) for d in spec.shape)}]"
        )
    if spec.min_shape is not None and spec.max_shape is not None:
        lo, hi = spec.min_shape, spec.max_shape
        if any(s < a or s > b for s, a, b in zip(shape, lo, hi, strict=False)):
            raise RuntimeExecutionError(
                f"{where}: input {spec.name!r} shape {list(shape)} is outside the engine's profile "
                f"min {list(lo)} .. max {list(hi)}; rebuild with a wider profile or resize the input"
            )


def random_feed(specs: tuple[TensorSpec, ...], *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for fully static specs (what trtexec does without --loadInputs)."""
    from .._io import check_allocation

    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        if not spec.is_static:
            shape = (
                spec.min_shape
                if spec.min_shape is not None and spec.max_shape == spec.min_shape
                else None
            )
            if shape is None:
                raise RuntimeExecutionError(
                    f"input {spec.describe()} has dynamic dimensions; give input data (--input x.npz)"
                )
        else:
            shape = tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
        check_allocation(  # numpy draws float64 first: 8 bytes an element, then the cast
            shape,
            np.float64,
            what=f"random input {spec.name!r}",
            error=RuntimeExecutionError,
            copies=2,
        )
        if spec.dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            feed[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feed[spec.name] = rng.integers(0, 8, shape).astype(spec.dtype)
    return feed

"""OrtRunner: the ONNX Runtime reference every engine is compared against.

CPU by default so the reference is deterministic and available everywhere; the CUDA
execution provider is used only when asked for (`providers="auto"` picks it when present).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .._io import (
    PROTOBUF_LIMIT,
    external_bytes,
    load_model,
    load_model_without_weights,
    ort_source,
)
from .._optional import onnxruntime
from ..errors import ModelLoadError, RuntimeExecutionError
from .base import Runner, TensorSpec, check_array, check_feed_names

log = logging.getLogger(__name__)

ORT_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def _spec(node_arg: Any) -> TensorSpec:
    dtype = ORT_TYPES.get(node_arg.type)
    if dtype is None:
        raise RuntimeExecutionError(
            f"tensor {node_arg.name!r} has type {node_arg.type}, which runners do not support"
        )
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (node_arg.shape or ()))
    return TensorSpec(node_arg.name, np.dtype(dtype), shape)


class OrtRunner(Runner):
    """Runs an ONNX model (path, ModelProto or serialized bytes) with ONNX Runtime."""

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto | bytes,
        *,
        providers: str | Sequence[str] = "cpu",
        session_options: Any = None,
        name: str | None = None,
    ) -> None:
        ort = onnxruntime()
        self.providers = _resolve_providers(ort, providers)
        source, self.name = _model_source(model, name)
        options = session_options or ort.SessionOptions()
        if session_options is None:
            options.log_severity_level = 3  # errors only; warnings go through our logging
        try:
            with (
                ort_source(source)
                if isinstance(source, onnx.ModelProto)
                else _given(source) as resolved
            ):
                self._session = ort.InferenceSession(
                    resolved, sess_options=options, providers=self.providers
                )
        except ModelLoadError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"{self.name}: ONNX Runtime cannot load the model: {first}"
            ) from None
        self._inputs = tuple(_spec(a) for a in self._session.get_inputs())
        self._outputs = tuple(_spec(a) for a in self._session.get_outputs())
        log.info("OrtRunner %s on %s", self.name, self._session.get_providers())

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        where = f"{self.name} (onnxruntime)"
        if self._session is None:
            raise RuntimeExecutionError(f"{where}: runner was closed")
        check_feed_names(feed, self._inputs, where)
        arrays = {spec.name: check_array(feed[spec.name], spec, where) for spec in self._inputs}
        try:
            values = self._session.run(None, arrays)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeExecutionError(f"{where}: inference failed: {first}") from None
        return {spec.name: np.asarray(v) for spec, v in zip(self._outputs, values, strict=True)}

    def close(self) -> None:
        self._session = None


def _resolve_providers(ort: Any, providers: str | Sequence[str]) -> list[str]:
    available = ort.get_available_providers()
    if isinstance(providers, str):
        if providers == "cpu":
            return ["CPUExecutionProvider"]
        if providers == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise RuntimeExecutionError(
                    f"CUDA execution provider asked for but ONNX Runtime offers only {available}; "
                    "install onnxruntime-gpu or use providers='cpu'"
                )
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if providers == "auto":
            return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        providers = [providers]
    missing = [p for p in providers if p not in available]
    if missing:
        raise RuntimeExecutionError(
            f"ONNX Runtime providers {missing} are not available; available: {available}"
        )
    return list(providers)


@contextlib.contextmanager
def _given(source: Any) -> Iterator[Any]:
    yield source


def _model_source(model: Any, name: str | None) -> tuple[Any, str]:
    """The model ONNX Runtime gets: always a proto with every external tensor already read
    (load_model checks each location), so nothing is resolved against the current directory."""
    if isinstance(model, onnx.ModelProto):
        return model, name or (model.graph.name or "model")
    if isinstance(model, (bytes, bytearray)):
        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception:  # noqa: BLE001 - ONNX Runtime names what is wrong with it
            return bytes(model), name or "model"
        return proto, name or "model"
    path = Path(model)
    # the gate checks existence, format and every external location with one-line errors
    stored = load_model_without_weights(path)
    if external_bytes(stored) >= PROTOBUF_LIMIT - (1 << 24):
        # past 2 GiB no proto can hold it: ORT reads the (checked) weights beside the file
        return str(path), name or path.name
    return load_model(path, check=False), name or path.name

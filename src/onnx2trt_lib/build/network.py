"""ONNX -> TensorRT network definition, with parser failures named by ONNX node.

The builder, network, parser and logger travel together in `ParsedNetwork`: the network
borrows weights owned by the parser, so none may be freed before the engine is built.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import (
    check_model_file,
    load_model,
    load_model_without_weights,
    published_now,
    save_model,
)
from .._lazy import lazy_module
from .._weights import is_large
from ..errors import BuildError
from .backends import Backend, detect_backend, make_logger, prepare_onnx_for_precision
from .config import BuildConfig, format_shape

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")  # imported on first use (see _lazy)
log = logging.getLogger(__name__)

_MAX_ERRORS_SHOWN = 3


@dataclass(frozen=True)
class TensorInfo:
    """A network input or output: name, dtype (numpy spelling) and shape (-1 = dynamic)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class ParsedNetwork:
    """A parsed network and the TensorRT objects that must outlive it."""

    backend: Backend
    builder: Any
    network: Any
    parser: Any
    logger: Any
    source: str
    model: onnx.ModelProto

    @property
    def inputs(self) -> list[TensorInfo]:
        return [
            _tensor_info(self.backend, self.network.get_input(i))
            for i in range(self.network.num_inputs)
        ]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [
            _tensor_info(self.backend, self.network.get_output(i))
            for i in range(self.network.num_outputs)
        ]


def network_from_onnx(
    model: str | os.PathLike | onnx.ModelProto,
    backend: Backend | str = "auto",
    *,
    config: BuildConfig | None = None,
) -> ParsedNetwork:
    """Parse an ONNX file or ModelProto into a TensorRT network.

    With a `config` asking for FP16/INT8 on a strongly typed backend, the ONNX is first
    rewritten by the precision passes (see `prepare_onnx_for_precision`). Parser failures
    raise BuildError naming the ONNX node, its op and TensorRT's reason.
    """
    if isinstance(backend, str):
        backend = detect_backend(backend)
    if isinstance(model, onnx.ModelProto):
        path, source = None, model.graph.name or "model"
    else:
        path = Path(model)
        source = str(path)
    rewrites = config is not None and (config.fp16 or config.int8)
    if path is not None and not rewrites:
        # TensorRT reads the file and its weights itself: the proto here needs no weights
        # (a model past 2 GiB would otherwise sit in memory twice)
        proto = load_model_without_weights(path)
        check_model_file(path)
    else:
        proto = load_model(model if path is None else path)
    prepared = prepare_onnx_for_precision(proto, config, backend) if config is not None else proto

    trt = backend.trt
    logger = make_logger(backend)
    builder = trt.Builder(logger)
    # Flags 0: explicit batch is the only mode in TensorRT 10+ and TensorRT-RTX; TensorRT 11
    # and RTX networks are strongly typed whatever the flags say.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if path is not None and prepared is proto:
        ok = parser.parse_from_file(str(path))  # lets TensorRT read external data itself
    elif is_large(prepared):  # past 2 GiB: no bytes to hand over; a file with external data
        with tempfile.TemporaryDirectory(prefix="onnx2trt-parse-") as folder:
            saved = Path(folder) / "model.onnx"
            with published_now():  # scratch, read now: not part of the command's output set
                save_model(prepared, saved, external_data=True)
            ok = parser.parse_from_file(str(saved))  # the parser holds the weights from here
    else:
        model_dir = str(path.parent) if path is not None else None
        data = prepared.SerializeToString()
        ok = parser.parse(data, model_dir) if model_dir else parser.parse(data)
    if not ok or parser.num_errors:
        raise BuildError(_parser_message(backend, parser, source))
    log.info(
        "parsed %s with %s: %d inputs, %d outputs, %d layers",
        source,
        backend.label,
        network.num_inputs,
        network.num_outputs,
        network.num_layers,
    )
    return ParsedNetwork(backend, builder, network, parser, logger, source, prepared)


def _parser_message(backend: Backend, parser: Any, source: str) -> str:
    """One line: every parser error as `node 'name' (Op): reason`, the first few in full."""
    parts = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node_name = err.node_name() or ""
        op = err.node_operator() or ""
        desc = " ".join(str(err.desc()).split())
        if node_name or op:
            parts.append(f"node {node_name!r} ({op}): {desc}")
        else:
            parts.append(desc)
    if not parts:
        parts.append("the parser failed without a message; re-run with -vv to see TensorRT's log")
    shown = "; ".join(parts[:_MAX_ERRORS_SHOWN])
    more = f"; and {len(parts) - _MAX_ERRORS_SHOWN} more" if len(parts) > _MAX_ERRORS_SHOWN else ""
    return (
        f"{source}: {backend.label} cannot parse the model: {shown}{more} "
        "(fix or replace these nodes, e.g. with `onnx2trt fix`)"
    )


def _tensor_info(backend: Backend, tensor: Any) -> TensorInfo:
    return TensorInfo(
        tensor.name, dtype_name(backend, tensor.dtype), tuple(int(d) for d in tensor.shape)
    )


def dtype_name(backend: Backend, dtype: Any) -> str:
    """A TensorRT DataType as numpy spells it ("float32"), or TensorRT's name when numpy has none."""
    try:
        import numpy as np

        return np.dtype(backend.trt.nptype(dtype)).name
    except Exception:  # noqa: BLE001
        return str(getattr(dtype, "name", dtype)).lower()


def describe_inputs(inputs: list[TensorInfo]) -> str:
    return ", ".join(f"{t.name}:{format_shape(t.shape)}" for t in inputs)

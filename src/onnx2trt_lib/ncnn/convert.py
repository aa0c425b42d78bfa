"""ONNX -> FP32 ncnn model with pnnx (the converter of the `pnnx` wheel), in a scratch folder."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import _optional
from ..errors import Onnx2TrtError

log = logging.getLogger(__name__)

PNNX_TIMEOUT_S = 1800
# pnnx reads ONNX through the ONNX Runtime it embeds (1.30 in pnnx 20261020), which refuses
# models of a newer IR version even when they use nothing new; onnx >= 1.23 writes IR 14
PNNX_MAX_IR_VERSION = 13


class ConversionError(Onnx2TrtError):
    """pnnx could not turn the model into an ncnn model."""


@dataclass(frozen=True)
class NcnnFiles:
    param: Path
    bin: Path


def _shape_arg(shapes: Sequence[Sequence[int]]) -> str:
    return ",".join("[" + ",".join(str(int(d)) for d in dims) + "]" for dims in shapes)


def pnnx_convert(
    model: str | os.PathLike,
    input_shapes: Mapping[str, Sequence[int]],
    workdir: str | os.PathLike,
) -> NcnnFiles:
    """Run pnnx on `model` (a copy in `workdir`) with FP32 weights; return the .ncnn.param/.bin.

    pnnx writes a dozen side files next to its input, so it runs on a copy in `workdir`; the
    shapes are the ONNX inputs' in graph order, batch 1.
    """
    exe = _optional.pnnx_binary()
    work = Path(workdir)
    src = work / "model.onnx"
    pnnx_copy(model, src)
    args = [
        exe,
        str(src),
        f"inputshape={_shape_arg(list(input_shapes.values()))}",
        "fp16=0",
        f"ncnnparam={work / 'model.ncnn.param'}",
        f"ncnnbin={work / 'model.ncnn.bin'}",
        f"ncnnpy={work / 'model_ncnn.py'}",
    ]
    log.info("running %s", " ".join(args))
    try:
        done = subprocess.run(
            args, cwd=work, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise ConversionError(f"pnnx did not finish within {PNNX_TIMEOUT_S} s") from None
    files = NcnnFiles(work / "model.ncnn.param", work / "model.ncnn.bin")
    if done.returncode != 0 or not files.param.is_file() or not files.bin.is_file():
        tail = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        why = tail[-1].strip() if tail else f"exit status {done.returncode}"
        raise ConversionError(f"pnnx could not convert {model}: {why}")
    log.debug("pnnx output:\n%s", done.stdout + done.stderr)
    return files


def pnnx_copy(model: str | os.PathLike, dest: Path) -> None:
    """The model as pnnx reads it: weights inline (or in one data file past 2 GiB) and the IR
    version capped at PNNX_MAX_IR_VERSION (the opsets stay: only the file format version
    changes; a model that really needs the newer IR then fails in pnnx as before)."""
    from .._io import load_model, published_now, save_model

    proto = load_model(model, check=False)
    if proto.ir_version > PNNX_MAX_IR_VERSION:
        log.info("IR version %d written as %d for pnnx", proto.ir_version, PNNX_MAX_IR_VERSION)
        proto.ir_version = PNNX_MAX_IR_VERSION
    with published_now():  # pnnx reads it now, whatever output set the caller publishes
        save_model(proto, dest)

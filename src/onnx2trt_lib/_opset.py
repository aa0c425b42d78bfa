"""Raise a model's default-domain opset with ONNX's version converter (input never modified)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._lazy import lazy_module
from .errors import UsageError

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")  # imported on first use (see _lazy)
log = logging.getLogger(__name__)


def at_least_opset(
    model: onnx.ModelProto, wanted: int, why: str
) -> tuple[onnx.ModelProto, str | None]:
    """(model, None) when its opset is already >= `wanted`, else (converted copy, a note).

    `why` says what needs the opset, for the note and for the error when conversion fails.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), wanted)
    if opset >= wanted:
        return model, None
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, wanted)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(
            f"the model's opset {opset} is below {wanted} ({why}) and the ONNX version converter "
            f"failed ({first}); export with opset >= {wanted}"
        ) from None
    note = f"opset {opset} converted to {wanted} ({why})"
    log.info("%s", note)
    return converted, note

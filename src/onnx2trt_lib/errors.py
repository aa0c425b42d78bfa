"""One base error for everything the library raises on purpose.

The CLI turns any `Onnx2TrtError` into a one-line message and an exit code; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class Onnx2TrtError(Exception):
    """Base class: a user-facing problem with a message that says what, where and what to do."""

    exit_code = 1


class UsageError(Onnx2TrtError):
    """Bad arguments: unknown target, pass name, malformed shape spec."""

    exit_code = 2


class ModelLoadError(Onnx2TrtError):
    """A model file that is missing, unreadable, corrupt or unsafe to load."""


class PassError(Onnx2TrtError):
    """A graph pass failed; the message names the pass and the passes before it."""


class EquivalenceError(PassError):
    """`fix`'s check found the fixed model computing something else; the message names the pass."""


class CalibrationError(Onnx2TrtError):
    """Calibration data or activations that cannot give valid ranges."""


class CacheFormatError(Onnx2TrtError):
    """A calibration cache or sidecar that does not parse (message has the line number)."""


class BuildError(Onnx2TrtError):
    """TensorRT parsing or building failed."""


class RuntimeExecutionError(Onnx2TrtError):
    """Running a model or engine failed: wrong inputs, CUDA errors."""


class MissingDependencyError(Onnx2TrtError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

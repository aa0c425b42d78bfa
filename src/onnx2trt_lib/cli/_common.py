"""What every subcommand shares: error-to-exit-code mapping, console, --json output.

Exit codes: 0 success, 1 error, 2 usage error, 3 findings (lint) / failed comparison.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import Onnx2TrtError, UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FINDINGS = 0, 1, 2, 3

# C0 controls but tab, DEL, C1 controls (0x9b is a one-byte CSI), and bidi overrides: a node or
# file name holding them would retitle the terminal, erase lines or reorder what is shown.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe_text(text: str) -> str:
    """`text` with terminal control characters shown as escapes (\\x1b, \\n, ...), never sent."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_CONSOLES: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """`console` (stdout) and `err_console` (stderr): rich Consoles made on first use, so that
    `onnx2trt --help` never imports rich. They print strings through `safe_text`: names from a
    model, a cache or a path reach the terminal as text, not as escape sequences (rich passes
    ESC through)."""
    if name not in ("console", "err_console"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _CONSOLES:
        from rich.console import Console

        class _SafeConsole(Console):
            def print(self, *objects: Any, **kwargs: Any) -> None:
                super().print(
                    *(safe_text(o) if isinstance(o, str) else o for o in objects), **kwargs
                )

        _CONSOLES[name] = _SafeConsole(
            stderr=name == "err_console", highlight=False, soft_wrap=True
        )
    return _CONSOLES[name]


def _err_console() -> Any:
    return __getattr__("err_console")


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)


class Onnx2TrtGroup(click.Group):
    """A click group whose commands never print a traceback for library errors (unless --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Onnx2TrtError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            # whole, not its first line: a path holding a newline is shown escaped (safe_text)
            message = str(exc).strip() or type(exc).__name__
            _err_console().print(
                f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False
            )
            ctx.exit(exc.exit_code)
        except (
            ModuleNotFoundError
        ) as exc:  # a dependency imported at module level (numba by calib) is missing
            from .._optional import from_import_error

            missing = from_import_error(exc)
            if missing is None or (ctx.obj and ctx.obj.get("debug")):
                raise
            _err_console().print(
                f"[bold red]error:[/] {escape(str(missing))}", markup=True, highlight=False
            )
            ctx.exit(missing.exit_code)
        except OSError as exc:  # a path the file system refuses (name too long, not a folder, ...)
            if ctx.obj and ctx.obj.get("debug"):
                raise
            from .._io import (
                shorten,  # here: _io imports onnx, which `onnx2trt --help` need not load
            )

            where = f": {shorten(str(exc.filename))}" if exc.filename else ""
            _err_console().print(
                f"[bold red]error:[/] {escape((exc.strerror or type(exc).__name__) + where)}",
                markup=True,
                highlight=False,
            )
            ctx.exit(EXIT_ERROR)
        except MemoryError as exc:  # a size no guard foresaw: still one line, not a traceback
            if ctx.obj and ctx.obj.get("debug"):
                raise
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
            _err_console().print(
                f"[bold red]error:[/] out of memory ({escape(detail)}); use smaller inputs or shapes",
                markup=True,
                highlight=False,
            )
            ctx.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            _err_console().print(
                "interrupted; no partial file was left (outputs finished before the interrupt stay)"
            )
            ctx.exit(130)


def debug_enabled() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("debug"))


def print_json(payload: Any) -> None:
    """Strict JSON on stdout: Infinity/NaN (which JSON has not) become the strings "inf", "-inf", "nan"."""
    click.echo(
        json.dumps(
            _finite(payload), indent=2, sort_keys=False, default=_json_default, allow_nan=False
        )
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if quiet:
        level = logging.ERROR
    elif verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # TensorRT's error lines end up in the one-line error message: without -v they are not logged too
    trt_log = logging.getLogger("onnx2trt_lib.build.trt")
    for old in [f for f in trt_log.filters if isinstance(f, _BelowError)]:
        trt_log.removeFilter(old)
    if level >= logging.WARNING:
        trt_log.addFilter(_BelowError())
    # onnx-graphsurgeon prints its warnings to stdout, which would break --json there; set its
    # level when it loads (importing it here would load onnx for every command)
    _GraphSurgeonLevel.install(errors_only=level >= logging.WARNING)


class _GraphSurgeonLevel:
    """Sets onnx-graphsurgeon's logger severity right after `onnx_graphsurgeon.logger` imports."""

    errors_only = True

    @classmethod
    def install(cls, *, errors_only: bool) -> None:
        cls.errors_only = errors_only
        if "onnx_graphsurgeon.logger" in sys.modules:
            cls.apply(sys.modules["onnx_graphsurgeon.logger"])
        elif not any(isinstance(f, cls) for f in sys.meta_path):
            sys.meta_path.insert(0, cls())

    @classmethod
    def apply(cls, module: Any) -> None:
        with contextlib.suppress(Exception):
            g_logger = module.G_LOGGER
            g_logger.severity = g_logger.ERROR if cls.errors_only else g_logger.WARNING

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "onnx_graphsurgeon.logger":
            return None
        others = [f for f in sys.meta_path if not isinstance(f, _GraphSurgeonLevel)]
        for finder in others:
            spec = getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None:
                original = spec.loader.exec_module

                def exec_module(module: Any, original: Any = original) -> None:
                    original(module)
                    _GraphSurgeonLevel.apply(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        __getattr__("console").print(line, markup=False)


def quiet_option(func: Callable) -> Callable:
    return click.option("--quiet", "-q", is_flag=True, help="Print only errors.")(func)


def data_source_options(func: Callable) -> Callable:
    """--preprocess, --shape, --batch-size: how a --data image source becomes model feeds (as in calibrate)."""
    for option in reversed(
        (
            click.option(
                "--preprocess",
                "-p",
                default=None,
                metavar="PRESET|CONFIG",
                help="Image preprocessing for --data: imagenet, yolo, paddleocr, paddleocr-rec, or a .json/.toml config.",
            ),
            click.option(
                "--shapes",
                "--shape",
                "shapes",
                multiple=True,
                metavar="NAME:DIMS",
                help="Shape of dynamic inputs for --data: x:1x3x640x640 (trtexec) or "
                "x:[1,3,640,640] (Polygraphy). --shape is the old spelling.",
            ),
            click.option(
                "--batch-size",
                "-b",
                type=click.IntRange(min=1),
                default=None,
                help="Samples per --data batch.",
            ),
        )
    ):
        func = option(func)
    return func


def parse_method_options(values: tuple[str, ...]) -> dict[str, float]:
    """--method-option KEY=VALUE pairs as numbers (one-line UsageError otherwise)."""
    options: dict[str, float] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--method-option {item!r}: expected KEY=VALUE, e.g. percentile=99.99")
        try:
            number = json.loads(value)
        except ValueError:
            number = None
        if (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not math.isfinite(number)
        ):
            raise UsageError(f"--method-option {item!r}: value {value!r} is not a finite number")
        options[key] = number
    return options


method_options_option = click.option(
    "--method-option",
    "method_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Option of the method, e.g. percentile=99.99 (repeatable).",
)

add_state_option = click.option(
    "--add-state",
    "add_states",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Merge a saved state (from another part of the data) before computing ranges (repeatable).",
)


class _ShapeEntriesOption(click.Option):
    """Polygraphy's `--trt-opt-shapes x:[1,3,224,224] y:[1,10]`: one flag, several entries.

    click gives an option one value; the entries after it that look like `name:[...]` are
    taken too (a model path or another option is never eaten).
    """

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name)
            if option is None:
                continue
            original = option.process

            def process(value: Any, state: Any, original: Any = original) -> None:
                values = [value]
                while state.rargs and _SHAPE_ENTRY.match(state.rargs[0]):
                    values.append(state.rargs.pop(0))
                original(" ".join(values), state)

            option.process = process


_SHAPE_ENTRY = re.compile(r"^[^-].*:\s*\[[\d,\s]*\]$")


def build_shape_options(func: Callable) -> Callable:
    """Profiles for `build`, in every spelling users paste (parsed in build/config.py).

    Ours and trtexec's `--shapes` (MIN/OPT/MAX or one fixed shape), trtexec's
    `--minShapes/--optShapes/--maxShapes`, Polygraphy's `--trt-min-shapes/...` with
    `name:[1,3,224,224]` entries. Each min/opt/max triple is one more profile.
    """
    for option in reversed(
        (
            click.option(
                "--shapes",
                "--shape",
                "shapes",
                multiple=True,
                metavar="NAME:MIN/OPT/MAX,...",
                help="One optimization profile per use: x:1x3x224x224/8x3x224x224/32x3x224x224, or "
                "x:1x3x224x224 for a fixed shape (trtexec's --shapes); for a shape-tensor input, "
                "its values. Polygraphy's x:[1,3,224,224] works too.",
            ),
            click.option(
                "--min-shapes",
                "--minShapes",
                "min_shapes",
                multiple=True,
                metavar="NAME:DIMS,...",
                help="trtexec's --minShapes (one per profile).",
            ),
            click.option(
                "--opt-shapes",
                "--optShapes",
                "opt_shapes",
                multiple=True,
                metavar="NAME:DIMS,...",
                help="trtexec's --optShapes (one per profile).",
            ),
            click.option(
                "--max-shapes",
                "--maxShapes",
                "max_shapes",
                multiple=True,
                metavar="NAME:DIMS,...",
                help="trtexec's --maxShapes (one per profile).",
            ),
            click.option(
                "--trt-min-shapes",
                "trt_min_shapes",
                cls=_ShapeEntriesOption,
                multiple=True,
                metavar="NAME:[DIMS] ...",
                help="Polygraphy's --trt-min-shapes, e.g. x:[1,3,224,224] (one per profile).",
            ),
            click.option(
                "--trt-opt-shapes",
                "trt_opt_shapes",
                cls=_ShapeEntriesOption,
                multiple=True,
                metavar="NAME:[DIMS] ...",
                help="Polygraphy's --trt-opt-shapes (one per profile).",
            ),
            click.option(
                "--trt-max-shapes",
                "trt_max_shapes",
                cls=_ShapeEntriesOption,
                multiple=True,
                metavar="NAME:[DIMS] ...",
                help="Polygraphy's --trt-max-shapes (one per profile).",
            ),
        )
    ):
        func = option(func)
    return func


def profiles_from_options(
    shapes: tuple[str, ...],
    min_shapes: tuple[str, ...],
    opt_shapes: tuple[str, ...],
    max_shapes: tuple[str, ...],
    trt_min_shapes: tuple[str, ...],
    trt_opt_shapes: tuple[str, ...],
    trt_max_shapes: tuple[str, ...],
) -> tuple:
    """The profiles of `build_shape_options`: --shapes, then trtexec triples, then Polygraphy's."""
    from ..build.config import profiles_from_specs

    return profiles_from_specs(shapes, min_shapes, opt_shapes, max_shapes) + profiles_from_specs(
        (), trt_min_shapes, trt_opt_shapes, trt_max_shapes
    )


def json_option(func: Callable) -> Callable:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON to stdout."
    )(func)


def parse_comma_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def publishes_outputs(func: Callable) -> Callable:
    """Run a command inside `_io.output_set`: the files it writes are published together when it
    succeeds (temps, then renames), and none of them when it fails or is interrupted."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .._io import output_set  # lazily: `onnx2trt --help` need not import onnx

        with output_set():
            return func(*args, **kwargs)

    return wrapper


def wraps_command(func: Callable) -> Callable:
    return functools.wraps(func)(func)


def agreement_options(func: Callable) -> Callable:
    """--agreement, --min-agreement: the label-free check of an INT8 model against FP32."""
    for option in reversed(
        (
            click.option(
                "--agreement",
                type=click.Choice(["auto", "accuracy", "top1", "boxes", "mask", "sqnr"]),
                default="auto",
                show_default=True,
                help="How the INT8 model is compared with FP32: accuracy (classifiers, CTC: expected "
                "accuracy change, FP32's own probabilities standing in for the truth), top1 "
                "(classifiers, CTC: same reading as FP32), boxes (YOLO heads: matched boxes), mask "
                "(probability maps such as DB text detectors: IoU of the map > 0.3), sqnr (output "
                "SQNR); auto picks top1 for class scores and CTC, boxes, mask, else sqnr (accuracy is "
                "opt-in: more INT8, less margin).",
            ),
            click.option(
                "--min-agreement",
                type=click.FloatRange(0.0, 1.0),
                default=None,
                help="Share of rows (top1), F-score of boxes (boxes) or mean IoU (mask) that must "
                "agree with FP32 (default 0.99; top1 on CTC sequences 0.90, a row being a whole reading); "
                "for accuracy 1 + the expected change (default "
                "0.99: at most a point lost).",
            ),
        )
    ):
        func = option(func)
    return func

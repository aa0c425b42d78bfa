"""What every subcommand shares: error-to-exit-code mapping, console, --json output.

Exit codes: 0 success, 1 error, 2 usage error, 3 findings (lint) / failed comparison.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from ..errors import Onnx2TrtError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FINDINGS = 0, 1, 2, 3

console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Onnx2TrtGroup(click.Group):
    """A click group whose commands never print a traceback for library errors (unless --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Onnx2TrtError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            err_console.print(
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
            err_console.print(
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
            err_console.print(
                f"[bold red]error:[/] {escape((exc.strerror or type(exc).__name__) + where)}",
                markup=True,
                highlight=False,
            )
            ctx.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            err_console.print(
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
    # onnx-graphsurgeon prints its warnings to stdout, which would break --json there
    with contextlib.suppress(Exception):
        from onnx_graphsurgeon.logger import G_LOGGER

        G_LOGGER.severity = G_LOGGER.ERROR if level >= logging.WARNING else G_LOGGER.WARNING


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        console.print(line, markup=False)


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
                "--shape",
                "shapes",
                multiple=True,
                metavar="NAME:DIMS",
                help="Shape of a dynamic input for --data, trtexec style: x:1x3x640x640.",
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


def json_option(func: Callable) -> Callable:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON to stdout."
    )(func)


def parse_comma_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def wraps_command(func: Callable) -> Callable:
    return functools.wraps(func)(func)


def agreement_options(func: Callable) -> Callable:
    """--agreement, --min-agreement: the label-free check of an INT8 model against FP32."""
    for option in reversed(
        (
            click.option(
                "--agreement",
                type=click.Choice(["auto", "top1", "boxes", "sqnr"]),
                default="auto",
                show_default=True,
                help="How the INT8 model is compared with FP32: top1 (classifiers, CTC: arg-max per "
                "position), boxes (YOLO heads: matched boxes), sqnr (output SQNR); auto picks from the outputs.",
            ),
            click.option(
                "--min-agreement",
                type=click.FloatRange(0.0, 1.0),
                default=None,
                help="Share of rows (top1) or F-score of boxes that must agree with FP32 (default 0.99).",
            ),
        )
    ):
        func = option(func)
    return func

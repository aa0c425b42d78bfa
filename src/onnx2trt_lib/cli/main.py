"""The `onnx2trt` command: one module per subcommand, registered here."""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from collections.abc import Iterator

import click

from .. import __version__
from ._common import Onnx2TrtGroup, configure_logging

# subcommand name -> module in this package exposing a click command called `command`
SUBCOMMANDS: dict[str, str] = {
    "build": "build_cmd",
    "calibrate": "calibrate_cmd",
    "compare": "compare_cmd",
    "fix": "fix_cmd",
    "fp16": "fp16_cmd",
    "inspect": "inspect_cmd",
    "lint": "lint_cmd",
    "passes": "passes_cmd",
    "quantize": "quantize_cmd",
    "quickstart": "quickstart_cmd",
    "run": "run_cmd",
}

# `onnx2trt --help` lists these instead of importing every subcommand (and with them onnx and
# numpy); tests/cli/test_instant_cli.py checks they equal each command's own short help.
SUMMARIES: dict[str, str] = {
    "build": "Build a TensorRT engine from MODEL (ONNX) and write it to ENGINE with a JSON sidecar.",
    "calibrate": "Calibrate MODEL for INT8 on real data and write a TensorRT calibration cache.",
    "compare": "Compare outputs of MODEL_A against MODEL_B (the reference): max abs/rel error, "
    "cosine, worst elements.",
    "fix": "Fix MODEL for a TensorRT version and write it to OUTPUT (MODEL is never touched).",
    "fp16": "Convert a float32 model to float16; Casts only where FP16 and FP32 regions meet.",
    "inspect": "Show what an ONNX model, calibration cache, ranges JSON or engine (with its .json "
    "sidecar) holds.",
    "lint": "List the nodes of MODEL that TARGET's parser refuses.",
    "passes": "List every registered pass (built-in and from plugins) with what it does.",
    "quantize": "Insert symmetric INT8 Q/DQ pairs (TensorRT explicit quantization) from a "
    "calibration cache.",
    "quickstart": "Lint, fix, calibrate, quantize (INT8 Q/DQ + FP16), compare accuracy and build "
    "an engine for the bundled sample.",
    "run": "Run ENGINE or MODEL (.onnx) and report latency percentiles and throughput, like "
    "trtexec.",
}


class _LazyGroup(Onnx2TrtGroup):
    """Imports a subcommand's module only when it runs (keeps `onnx2trt --help` fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = SUBCOMMANDS.get(name)
        if module is None:
            return None
        with _sigint_deferred():
            return importlib.import_module(f"{__package__}.{module}").command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from SUMMARIES: no subcommand module is imported for --help."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, _shorten(SUMMARIES.get(n, ""), limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _shorten(text: str, limit: int) -> str:
    """As click shortens a command's help in a list: whole words, then "..."."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 1)].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "..."


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C while a subcommand's modules (numpy, onnx, protobuf extensions) import.

    A KeyboardInterrupt raised in the middle of a C extension's initialisation was seen to
    crash the interpreter (SIGSEGV) instead of exiting; delivered after the import, it takes
    the normal path (exit 130, nothing written).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnx2trt")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logs).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int) -> None:
    """ONNX to TensorRT: fix graphs for a TensorRT version, calibrate INT8, build and run engines."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    configure_logging(verbose, quiet=False)


def main() -> None:
    _terminate_as_interrupt()
    cli(obj={})


def _terminate_as_interrupt() -> None:
    """SIGTERM (kill, a job scheduler's timeout) takes the Ctrl-C path: temp files are removed."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":  # pragma: no cover
    main()

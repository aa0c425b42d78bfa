"""`onnx2trt build` with out-of-range numbers: a one-line error and a usage exit code, never a traceback.

Run as a real process: CliRunner would catch a traceback-producing exception itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

import onnx
import pytest
from helpers import conv_relu_model


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            ("--shapes", "x:1x3x8x8", "--workspace", "100000000T"),
            "memory size '100000000T' is more than 1 PiB",
        ),
        (
            ("--shapes", "x:1x3x8x8/2x3x8x8/99999999999999999999x3x8x8"),
            "has a dimension above 9223372036854775807",
        ),
        (
            ("--opt-shapes", "x:99999999999999999999x3x8x8"),
            "has a dimension above 9223372036854775807",
        ),
    ],
    ids=["workspace", "shapes", "opt-shapes"],
)
def test_out_of_range_numbers_exit_with_one_line(tmp_path, extra, needle):
    model = tmp_path / "m.onnx"
    onnx.save(conv_relu_model(), str(model))
    code = "import sys; from onnx2trt_lib.cli.main import cli; cli(sys.argv[1:], prog_name='onnx2trt', obj={})"
    res = subprocess.run(
        [sys.executable, "-c", code, "build", str(model), "-o", str(tmp_path / "m.engine"), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "ONNX2TRT_CACHE_DIR": str(tmp_path / "engine-cache")},
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "m.engine").exists()

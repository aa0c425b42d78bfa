"""Export the Resize test fixtures (tests/data/models/resize_*.onnx) with torch 2.13 (CPU).

Not run by the test suite (which needs no torch): run it by hand after changing the grid,
then commit the .onnx files it writes:

    python tests/models/export_resize.py [--out tests/data/models]

Each model is a tiny net, 1x3x8x8 -> Conv(3->4, 3x3) -> F.interpolate(scale_factor=...),
exported by the legacy TorchScript exporter (dynamo=False) at opsets 11/13/17 and by the
dynamo exporter at opset 18, with static or dynamic H/W. The grid picks a spread of
(mode, scale, align_corners, exporter, dynamic) rather than the full product, to keep
the fixtures small (~30 files, a few KB each).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import onnx

from onnx2trt_lib._io import write_bytes_atomic

# name fields: mode, scale tag, ac (align_corners) 1/0, exporter+opset, s(tatic)/d(ynamic)
GRID: list[tuple[str, tuple[float, float], bool | None, str, bool]] = [
    # legacy exporter, opset 11
    ("bilinear", (2.0, 2.0), True, "legacy11", False),
    ("bilinear", (1.5, 2.0), True, "legacy11", False),
    ("bicubic", (2.0, 3.0), True, "legacy11", True),
    ("bilinear", (1.5, 2.0), False, "legacy11", True),
    ("nearest", (2.0, 2.0), None, "legacy11", False),
    # legacy exporter, opset 13
    ("bilinear", (2.0, 3.0), True, "legacy13", True),
    ("bicubic", (2.0, 2.0), True, "legacy13", False),
    ("bilinear", (1.5, 2.0), True, "legacy13", True),
    ("bicubic", (2.0, 3.0), False, "legacy13", False),
    ("nearest", (2.0, 3.0), None, "legacy13", True),
    # legacy exporter, opset 17
    ("bilinear", (2.0, 2.0), True, "legacy17", True),
    ("bicubic", (1.5, 2.0), True, "legacy17", False),
    ("bilinear", (2.0, 2.0), False, "legacy17", False),
    ("nearest", (1.5, 2.0), None, "legacy17", False),
    ("bicubic", (1.5, 2.0), True, "legacy17", True),
    ("bilinear", (2.0, 3.0), True, "legacy17", False),
    # dynamo exporter (opset 18)
    ("bilinear", (2.0, 2.0), True, "dynamo18", False),
    ("bilinear", (2.0, 2.0), True, "dynamo18", True),
    ("bicubic", (2.0, 3.0), True, "dynamo18", False),
    ("bicubic", (2.0, 3.0), True, "dynamo18", True),
    ("bilinear", (1.5, 2.0), True, "dynamo18", False),
    ("bilinear", (1.5, 2.0), True, "dynamo18", True),
    ("bilinear", (2.0, 2.0), False, "dynamo18", True),
    ("bicubic", (1.5, 2.0), False, "dynamo18", False),
    ("nearest", (2.0, 2.0), None, "dynamo18", False),
    ("nearest", (2.0, 3.0), None, "dynamo18", True),
]


def fixture_name(
    mode: str, scale: tuple[float, float], align_corners: bool | None, exporter: str, dynamic: bool
) -> str:
    tag = "x".join(f"{s:g}".replace(".", "p") for s in scale)
    ac = "" if align_corners is None else f"_ac{int(align_corners)}"
    return f"resize_{mode}_{tag}{ac}_{exporter}_{'dyn' if dynamic else 'static'}.onnx"


def _net(mode: str, scale: tuple[float, float], align_corners: bool | None):
    import torch
    import torch.nn.functional as F

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            factor = scale[0] if scale[0] == scale[1] else scale
            return F.interpolate(y, scale_factor=factor, mode=mode, align_corners=align_corners)

    torch.manual_seed(0)
    return Net().eval()


def export_one(mode, scale, align_corners, exporter, dynamic) -> onnx.ModelProto:
    import torch

    net = _net(mode, scale, align_corners)
    x = torch.randn(1, 3, 8, 8)
    opset = int(exporter.removeprefix("legacy").removeprefix("dynamo"))
    buf = io.BytesIO()
    if exporter.startswith("legacy"):
        dyn = {"x": {2: "h", 3: "w"}, "y": {2: "oh", 3: "ow"}} if dynamic else None
        torch.onnx.export(
            net,
            (x,),
            buf,
            input_names=["x"],
            output_names=["y"],
            opset_version=opset,
            dynamic_axes=dyn,
            dynamo=False,
        )
        model = onnx.load_from_string(buf.getvalue())
    else:
        shapes = (
            {
                "x": {
                    2: torch.export.Dim("h", min=4, max=64),
                    3: torch.export.Dim("w", min=4, max=64),
                }
            }
            if dynamic
            else None
        )
        program = torch.onnx.export(
            net,
            (x,),
            input_names=["x"],
            output_names=["y"],
            opset_version=opset,
            dynamic_shapes=shapes,
            dynamo=True,
            optimize=True,
            external_data=False,
        )
        model = program.model_proto
    onnx.checker.check_model(model)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "models"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for entry in GRID:
        name = fixture_name(*entry)
        model = export_one(*entry)
        write_bytes_atomic(args.out / name, model.SerializeToString(deterministic=True))
        ops = sorted({n.op_type for n in model.graph.node})
        print(f"{name}: {len(model.graph.node)} nodes {ops}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Export the torch.gather / scatter fixtures under tests/data/models (run by hand, not by the suite).

    pip install torch==2.13.0 onnxscript   # CPU wheel
    python tests/models/export_gather.py [OUT_DIR]

Writes gather_*.onnx (torch.gather on every dim incl. negative, with constant, input and
data-dependent indices from argsort/topk; static and dynamic shapes; legacy exporter at
opsets 11/13/17 and the dynamo exporter at opset 18) and scatter_*.onnx. What torch 2.13's
dynamo exporter writes, checked here: `x[:, 1:3] = y` -> ScatterND reduction="none",
torch.scatter -> ScatterElements reduction="none", `x[:, tensor_idx] = y` -> ScatterND with no
reduction attribute, accumulating scatters -> reduction="add". The legacy exporter never
writes the attribute. Output is deterministic, except that dynamo files embed this
script's line numbers (stack-trace metadata).

Each file carries, in metadata_props["onnx2trt_test_inputs"], the input specs the tests feed
(dtype, shape at export, a second shape for dynamic models, bound of index inputs).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import onnx
import torch

OUT = Path(__file__).resolve().parents[1] / "data" / "models"


class Gather(torch.nn.Module):
    """torch.gather along `dim` with indices from `mode`: const | input | argsort | topk."""

    def __init__(self, dim: int, mode: str, data_shape: tuple[int, ...] = (3, 5, 6)) -> None:
        super().__init__()
        self.dim, self.mode = dim, mode
        # constant indices: shorter than the data on every dim
        generator = torch.Generator().manual_seed(dim + 7)
        high = data_shape[dim]
        self.register_buffer("const_idx", torch.randint(0, high, (2, 3, 4), generator=generator))

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "const":
            return torch.gather(x, self.dim, self.const_idx)
        if self.mode == "input":
            return torch.gather(x, self.dim, idx)
        if self.mode == "argsort":
            order = torch.argsort(x, dim=self.dim)
            return torch.gather(x * 2.0 + 1.0, self.dim, order)
        # topk: gather another tensor at the positions of the 2 largest values
        _, top = torch.topk(x, 2, dim=self.dim)
        return torch.gather(torch.cos(x), self.dim, top)


class SetSlice(torch.nn.Module):
    """x[:, 1:3] = y (slice_scatter): the dynamo exporter writes ScatterND reduction="none"."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, 1:3] = y
        return out + 1.0


class ScatterSrc(torch.nn.Module):
    """torch.scatter(x, 1, idx, y): ScatterElements reduction="none" from the dynamo exporter."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        idx = torch.tensor([[0, 2], [1, 0], [3, 3]])
        return torch.scatter(x, 1, idx, y)


class ScatterAdd(torch.nn.Module):
    """torch.scatter_add: ScatterElements reduction="add", which must be kept."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        idx = torch.tensor([[0, 2], [1, 1], [3, 3]])
        return torch.scatter_add(x, 1, idx, y)


class IndexPut(torch.nn.Module):
    """x[:, idx] = y with a tensor index: torch 2.13 writes ScatterND with no reduction at all."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, torch.tensor([2, 0])] = y
        return out


class IndexPutAccumulate(torch.nn.Module):
    """index_put_ with accumulate=True: ScatterND with reduction="add", which must be kept."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        idx = torch.tensor([1, 3])
        return x.index_put((idx,), y, accumulate=True)


def _export(
    module, args, *, opset: int, dynamo: bool, names, dynamic: dict[str, dict[int, str]] | None
):
    module.eval()
    if dynamo:
        shapes = None
        if dynamic:
            dims: dict[str, torch.export.Dim] = {}
            # keys are the forward() parameter names, which `names` mirrors
            shapes = {
                name: {
                    a: dims.setdefault(lb, torch.export.Dim(lb, min=2, max=64))
                    for a, lb in dynamic[name].items()
                }
                if name in dynamic
                else None
                for name in names
            }
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=opset, dynamic_shapes=shapes, input_names=names
        )
        with tempfile.TemporaryDirectory() as tmp:
            program.save(Path(tmp) / "m.onnx", external_data=False)
            model = onnx.load(Path(tmp) / "m.onnx")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            torch.onnx.export(
                module,
                args,
                Path(tmp) / "m.onnx",
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=["out"],
                dynamic_axes=dynamic or None,
            )
            model = onnx.load(Path(tmp) / "m.onnx")
    return model


def _spec(model: onnx.ModelProto, shapes: dict, other: dict | None, index_high: dict) -> dict:
    """Input specs for the tests: name -> dtype, shape at export, another shape, index bound."""
    spec = {}
    for value in model.graph.input:
        elem = value.type.tensor_type.elem_type
        spec[value.name] = {
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(elem).name,
            "shape": list(shapes[value.name]),
            "other_shape": list(other[value.name]) if other else None,
            "index_high": index_high.get(value.name),
        }
    return spec


def main(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x_shape, x_other = (3, 5, 6), (4, 5, 9)

    def add(name, module, args, *, opset, dynamo, dynamic=None, other=None, index_high=None):
        names = ["x", "idx", "y"][: len(args)] if isinstance(module, Gather) else ["x", "y"]
        path = out / f"{name}.onnx"
        model = _export(module, args, opset=opset, dynamo=dynamo, names=names, dynamic=dynamic)
        shapes = {n: tuple(a.shape) for n, a in zip(names, args, strict=True)}
        spec = _spec(model, shapes, other, index_high or {})
        onnx.helper.set_model_props(
            model, {"onnx2trt_test_inputs": json.dumps(spec, sort_keys=True)}
        )
        onnx.checker.check_model(model)
        onnx.save(model, path)
        ops = sorted({n.op_type for n in model.graph.node})
        print(f"{path.name:44s} {path.stat().st_size:7d} B  {ops}")

    torch.manual_seed(0)
    x = torch.randn(*x_shape)
    # legacy exporter: every dim incl. negative, three opsets, data-dependent / constant indices
    for opset in (11, 13, 17):
        for dim in (0, 1, 2, -1, -2):
            name = f"gather_argsort_dim{dim}_op{opset}".replace("-", "m")
            add(name, Gather(dim, "argsort"), (x,), opset=opset, dynamo=False)
    for dim in (0, 1, -1):
        add(
            f"gather_const_dim{dim}_op13".replace("-", "m"),
            Gather(dim, "const"),
            (x,),
            opset=13,
            dynamo=False,
        )
        add(
            f"gather_topk_dim{dim}_op17".replace("-", "m"),
            Gather(dim, "topk"),
            (x,),
            opset=17,
            dynamo=False,
        )
    # indices as a graph input; dynamic batch and last dim
    idx = torch.randint(0, 5, (3, 5, 4))
    dyn = {"x": {0: "n", 2: "w"}, "idx": {0: "n", 2: "k"}}
    add(
        "gather_input_dim1_op13_dynamic",
        Gather(1, "input"),
        (x, idx),
        opset=13,
        dynamo=False,
        dynamic=dyn,
        other={"x": x_other, "idx": (4, 5, 3)},
        index_high={"idx": 5},
    )
    add(
        "gather_argsort_dimm1_op17_dynamic",
        Gather(-1, "argsort"),
        (x,),
        opset=17,
        dynamo=False,
        dynamic={"x": {0: "n", 2: "w"}},
        other={"x": x_other},
    )
    add(
        "gather_topk_dim0_op11_dynamic",
        Gather(0, "topk"),
        (x,),
        opset=11,
        dynamo=False,
        dynamic={"x": {0: "n", 2: "w"}},
        other={"x": x_other},
    )
    # dynamo exporter (opset 18)
    for dim in (0, 2, -1):
        add(
            f"gather_argsort_dim{dim}_dynamo".replace("-", "m"),
            Gather(dim, "argsort"),
            (x,),
            opset=18,
            dynamo=True,
        )
    add("gather_const_dimm2_dynamo", Gather(-2, "const"), (x,), opset=18, dynamo=True)
    add(
        "gather_topk_dim1_dynamo_dynamic",
        Gather(1, "topk"),
        (x,),
        opset=18,
        dynamo=True,
        dynamic={"x": {0: "n", 2: "w"}},
        other={"x": x_other},
    )
    add(
        "gather_input_dimm1_dynamo_dynamic",
        Gather(-1, "input"),
        (x, idx),
        opset=18,
        dynamo=True,
        dynamic={"x": {0: "n"}, "idx": {0: "n", 2: "k"}},
        other={"x": (4, 5, 6), "idx": (4, 5, 3)},
        index_high={"idx": 6},
    )
    # scatters: what torch 2.13's dynamo exporter writes (reduction="none" from slice assignment
    # and torch.scatter; nothing from index_put; "add" from accumulating scatters)
    x2, y2 = torch.randn(3, 5, 6), torch.randn(3, 2, 6)
    add("scatter_setslice_dynamo", SetSlice(), (x2, y2), opset=18, dynamo=True)
    add(
        "scatter_setslice_dynamo_dynamic",
        SetSlice(),
        (x2, y2),
        opset=18,
        dynamo=True,
        dynamic={"x": {0: "n", 2: "w"}, "y": {0: "n", 2: "w"}},
        other={"x": (4, 5, 7), "y": (4, 2, 7)},
    )
    add(
        "scatter_src_dynamo",
        ScatterSrc(),
        (torch.randn(3, 4), torch.randn(3, 2)),
        opset=18,
        dynamo=True,
    )
    add(
        "scatter_add_dynamo",
        ScatterAdd(),
        (torch.randn(3, 4), torch.randn(3, 2)),
        opset=18,
        dynamo=True,
    )
    add(
        "scatter_index_put_dynamo",
        IndexPut(),
        (torch.randn(3, 4, 5), torch.randn(3, 2, 5)),
        opset=18,
        dynamo=True,
    )
    add(
        "scatter_index_put_accumulate_dynamo",
        IndexPutAccumulate(),
        (torch.randn(5, 4), torch.randn(2, 4)),
        opset=18,
        dynamo=True,
    )
    add("scatter_setslice_op17", SetSlice(), (x2, y2), opset=17, dynamo=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)

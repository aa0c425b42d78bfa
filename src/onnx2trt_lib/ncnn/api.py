"""`ncnn_int8()`: ONNX -> FP32 ncnn model (pnnx) -> ranges from our calibration -> ncnn2table's
table and the INT8 ncnn model ncnn2int8 would write, all five files written as a set.

Steps: convert with pnnx; fuse activations into the layers before them (fuse.py, as
ncnnoptimize does; the FP32 model written is the fused one); walk the .bin (refuse layouts we
cannot rewrite); map each quantized
layer's input blob to an ONNX tensor (mapping.py); calibrate those tensors (calib.calibrate,
which also reuses a matching cache); weight scales from the FP32 weights; table; INT8 model;
optionally keep the layers that hurt most in FP32 until the INT8 model agrees with FP32 ncnn.
Nothing is written until everything has succeeded.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import OutputError, load_model, write_bytes_atomic, write_files_atomic, write_text_atomic
from ..errors import UsageError
from .convert import NcnnFiles, pnnx_convert
from .fuse import fold_residuals, fuse_activations, requantize_targets
from .int8 import gemm_int8_layers, reads_image, weight_scales, write_int8
from .mapping import LayerInput, map_layers, ncnn_inputs
from .param import read_floats, read_param, walk_bin
from .table import NcnnTable, table_from

log = logging.getLogger(__name__)

# samples used to check agreement (protection) and to measure it in the report
AGREEMENT_SAMPLES = 64


@dataclass
class NcnnResult:
    """What `ncnn_int8` wrote and decided."""

    param: Path
    bin: Path
    table: Path
    int8_param: Path
    int8_bin: Path
    layers: list[LayerInput]
    quantized: list[str]
    kept_fp32: list[str] = field(default_factory=list)
    requantized: list[str] = field(default_factory=list)
    int8_gemm: list[str] = field(default_factory=list)
    agreement: float | None = None
    sqnr_db: float | None = None
    calibration: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "param": str(self.param),
            "bin": str(self.bin),
            "table": str(self.table),
            "int8_param": str(self.int8_param),
            "int8_bin": str(self.int8_bin),
            "layers": [
                {
                    "layer": m.layer,
                    "type": m.layer_type,
                    "blob": m.blob,
                    "onnx_tensor": m.tensor,
                    "matched_by": m.how,
                }
                for m in self.layers
            ],
            "quantized": self.quantized,
            "kept_fp32": self.kept_fp32,
            "requantized": self.requantized,
            "int8_gemm": self.int8_gemm,
            "agreement": self.agreement,
            "sqnr_db": self.sqnr_db,
            "cache_hit": bool(getattr(self.calibration, "cache_hit", False)),
        }


def host_is_x86() -> bool:
    """Where ncnn's INT8 depthwise kernel is slower than its FP32 one (measured: docs/ncnn.md)."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def output_paths(output_dir: Path, stem: str) -> dict[str, Path]:
    return {
        "param": output_dir / f"{stem}.param",
        "bin": output_dir / f"{stem}.bin",
        "table": output_dir / f"{stem}.table",
        "int8_param": output_dir / f"{stem}-int8.param",
        "int8_bin": output_dir / f"{stem}-int8.bin",
    }


def ncnn_int8(
    model: str | os.PathLike,
    data: Any,
    output_dir: str | os.PathLike,
    *,
    method: str = "mse",
    method_options: Mapping[str, Any] | None = None,
    shapes: str | Sequence[str] | Mapping[str, Sequence[int]] | None = None,
    preprocess: Any = None,
    batch_size: int | None = None,
    cache: str | os.PathLike | None = None,
    add_states: Sequence[str | os.PathLike] = (),
    force: bool = False,
    protect: bool = True,
    min_sqnr: float = 20.0,  # the Q/DQ protection's default (quant.agreement)
    min_agreement: float = 0.99,
    name: str | None = None,
    depthwise: bool | None = None,
    image_conv: bool | None = None,
    requantize: bool = True,
    gemm: bool = False,
) -> NcnnResult:
    """Write `<name>.param/.bin` (FP32 ncnn), `<name>.table` (ncnn2table format) and
    `<name>-int8.param/.bin` into `output_dir`. Both models are pnnx's with `x + conv(x)`
    residuals folded into the convolution and activations fused (fuse.py); on x86 the INT8
    model runs narrow 3x3 convolutions without Winograd (int8.narrow_winograd).

    `cache`: a TensorRT cache path; a matching one (same model, data, settings, as `onnx2trt
    calibrate` writes it) is reused, otherwise it is written. Without it only the tensors the
    ncnn layers read are calibrated. `protect`: keep the most harmful layers in FP32 until the
    INT8 model agrees with FP32 ncnn on the first AGREEMENT_SAMPLES samples of `data`: every
    output's SQNR at least `min_sqnr` dB and the arg-max over its last axis (a class, or a CTC
    step's label) the same on at least `min_agreement` of the positions.

    `depthwise=False` keeps every ConvolutionDepthWise in FP32 (no table lines): ncnn's x86 INT8
    depthwise kernel is SSE-only and slower than its FP32 one (docs/ncnn.md has the numbers).
    `None` (default) decides by this machine, where the protection measures the model: FP32 on
    x86, INT8 elsewhere (ARM has NEON INT8 depthwise kernels); pass True when converting on x86
    for an ARM target.
    `image_conv=False` keeps Convolutions reading at most 3 channels (such as the image) in FP32: with
    a reduction of 9-27 values their INT8 GEMM saves little and the INT8 layer adds a quantize
    pass over the input; `None` (default): FP32 on x86, INT8 elsewhere, as for `depthwise`.
    `requantize=False` writes no requantize fusion (every INT8 layer dequantizes its output).
    `gemm=True` also writes Gemm layers with constant weights in ncnn's table-free INT8 (int8
    weights, activations quantized per row at run time); the protection leaves them INT8.
    """
    from ..calib.api import calibrate
    from ..calib.collect import model_feeds

    model_path = Path(model)
    proto = load_model(model_path, check=False)
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output {out_dir} exists and is not a folder")
    if not 0 < min_agreement <= 1:
        raise UsageError(f"min_agreement must be in (0, 1], got {min_agreement}")
    if not np.isfinite(min_sqnr):
        raise UsageError(f"min_sqnr must be a finite number of dB, got {min_sqnr}")
    stem = name or model_path.stem
    paths = output_paths(out_dir, stem)
    inputs = {model_path.resolve(), *(Path(p).resolve() for p in add_states)}
    if isinstance(data, (str, os.PathLike)):
        inputs.add(Path(data).resolve())
    for path in paths.values():
        if path.resolve() in inputs:
            raise OutputError(f"output {path} is an input; inputs are never overwritten")

    feeds = model_feeds(
        proto,
        data,
        preprocess=preprocess,
        shapes=shapes,
        batch_size=1,
        max_batches=AGREEMENT_SAMPLES,
    )
    input_shapes = {k: v.shape for k, v in feeds[0].items()}
    with tempfile.TemporaryDirectory(prefix="onnx2trt-ncnn-") as scratch:
        converted = pnnx_convert(model_path, input_shapes, scratch)
        param = read_param(converted.param)
        bin_bytes = converted.bin.read_bytes()
        param, bin_bytes, folded = fold_residuals(param, bin_bytes, walk_bin(param, bin_bytes))
        if folded:
            log.info("folded %d residual adds into their convolutions", len(folded))
        param, fused = fuse_activations(param)
        if fused:
            log.info("fused %d activations into the layers before them", len(fused))
        fp32 = NcnnFiles(Path(scratch) / "fused.param", Path(scratch) / "fused.bin")
        write_text_atomic(fp32.param, param.text())
        write_bytes_atomic(fp32.bin, bin_bytes)
        segments = walk_bin(param, bin_bytes)
        layers = map_layers(proto, param, fp32.param, fp32.bin, feeds[0])
        # what gets a table entry (all mapped layers, less depthwise ones and convolutions on
        # the image when not wanted)
        x86 = host_is_x86()
        if depthwise is None:
            depthwise = not x86
        if image_conv is None:
            image_conv = not x86
        chosen = [
            m
            for m in layers
            if (depthwise or m.layer_type != "ConvolutionDepthWise")
            and (image_conv or not reads_image(param.layer(m.layer)))
        ]
        tensors = sorted({m.tensor for m in chosen})
        if not layers:
            log.warning("the ncnn model has no Convolution/ConvolutionDepthWise/InnerProduct layer")
        calibration = calibrate(
            model_path,
            data,
            method=method,
            method_options=method_options,
            batch_size=batch_size,
            shapes=shapes,
            preprocess=preprocess,
            output=cache,
            force=force,
            tensors=None if cache is not None else tensors,
            add_states=add_states,
        )
        missing = [t for t in tensors if t not in calibration.amax]
        if missing:
            raise UsageError(
                f"the calibration has no range for {missing[0]!r} (read by an ncnn layer); "
                "calibrate every tensor (drop --exclude-style options) or give another cache"
            )
        by_layer = {m.layer: m for m in chosen}
        w_scales = {
            m.layer: weight_scales(
                param.layer(m.layer), read_floats(bin_bytes, segments[m.layer][0])
            )
            for m in chosen
        }
        order = [layer.name for layer in param.layers if layer.name in by_layer]
        table = table_from(
            w_scales, {m.layer: calibration.amax[m.tensor] for m in chosen}, order
        ).parsed()

        kept: list[str] = []
        agreement = sqnr = None

        def int8_model(keep: Sequence[str]) -> tuple[str, bytes, list[str]]:
            return write_int8(
                param,
                bin_bytes,
                segments,
                _without(table, keep),
                requantize=requantize,
                gemm=gemm,
                narrow_winograd_off=x86,
            )

        int8_text, int8_bin, quantized = int8_model(kept)
        if chosen:
            blobs = ncnn_inputs(param, list(feeds[0]))
            checker = _Agreement(fp32.param, fp32.bin, param, blobs, feeds, Path(scratch))
            sqnr, agreement = checker.score(int8_text, int8_bin)
            if protect and (sqnr < min_sqnr or agreement < min_agreement):
                kept, (sqnr, agreement) = _protect(
                    checker, int8_model, order, (min_sqnr, min_agreement)
                )
                int8_text, int8_bin, quantized = int8_model(kept)
        final = _without(table, kept)
        requantized = (
            list(requantize_targets(param, {n: final.inputs[n] for n in quantized}))
            if requantize
            else []
        )
        staged = {
            "param": param.text().encode(),
            "bin": bin_bytes,
            "table": _without(table, kept).text().encode(),
            "int8_param": int8_text.encode(),
            "int8_bin": int8_bin,
        }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    write_files_atomic({paths[k]: v for k, v in staged.items()})
    return NcnnResult(
        **paths,
        layers=layers,
        quantized=quantized,
        kept_fp32=kept,
        requantized=requantized,
        int8_gemm=sorted(gemm_int8_layers(param)) if gemm else [],
        agreement=agreement,
        sqnr_db=sqnr,
        calibration=calibration,
    )


def _without(table: NcnnTable, layers: Sequence[str]) -> NcnnTable:
    return NcnnTable(
        {k: v for k, v in table.weights.items() if k not in layers},
        {k: v for k, v in table.inputs.items() if k not in layers},
    )


class _Agreement:
    """Top-1 agreement (or, for outputs without classes, closeness) of an INT8 model with FP32 ncnn."""

    def __init__(self, param_path, bin_path, param, blobs, feeds, scratch: Path) -> None:
        from .runtime import load_net, run

        self.run = run
        self.blobs = blobs
        self.feeds = feeds
        self.outputs = _output_blobs(param)
        net = load_net(param_path, bin_path)
        self.reference = [self._outputs(net, feed) for feed in feeds]
        self.scratch = scratch
        self.count = 0

    def _outputs(self, net, feed) -> list[np.ndarray]:
        got = self.run(
            net, {blob: feed[name][0] for blob, name in self.blobs.items()}, self.outputs
        )
        return [got[o] for o in self.outputs]

    def score(self, param_text: str, bin_bytes: bytes) -> tuple[float, float]:
        """(lowest output SQNR in dB, mean arg-max agreement) of an INT8 model against FP32."""
        from .runtime import load_net

        self.count += 1
        p = self.scratch / f"check{self.count}.param"
        b = self.scratch / f"check{self.count}.bin"
        write_text_atomic(p, param_text)
        write_bytes_atomic(b, bin_bytes)
        net = load_net(p, b, int8=True)
        agree = []
        signal = np.zeros(len(self.outputs))
        noise = np.zeros(len(self.outputs))
        for feed, ref in zip(self.feeds, self.reference, strict=True):
            got = self._outputs(net, feed)
            agree.append(np.mean([_same(g, r) for g, r in zip(got, ref, strict=True)]))
            for k, (g, r) in enumerate(zip(got, ref, strict=True)):
                r64 = r.astype(np.float64)
                signal[k] += float(np.sum(r64**2))
                noise[k] += (
                    float(np.sum((g.astype(np.float64) - r64) ** 2))
                    if g.shape == r.shape
                    else np.inf
                )
        with np.errstate(divide="ignore"):
            sqnr = 10 * np.log10(np.where(noise > 0, signal / np.maximum(noise, 1e-300), np.inf))
        return float(np.min(sqnr)), float(np.mean(agree))


def _same(got: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of positions whose arg-max over the last axis agrees (a classifier's or a
    sequence model's per-step label)."""
    if got.shape != ref.shape or got.size == 0:
        return 0.0
    if ref.ndim == 0 or ref.shape[-1] == 1:
        return float(
            np.allclose(got, ref, rtol=0.05, atol=0.05 * float(np.abs(ref).max(initial=0)))
        )
    return float(np.mean(got.argmax(-1) == ref.argmax(-1)))


def _output_blobs(param) -> list[str]:
    consumed = {b for layer in param.layers for b in layer.bottoms}
    return [t for layer in param.layers for t in layer.tops if t not in consumed]


def _harm(score: tuple[float, float], target: tuple[float, float]) -> float:
    """How much of the allowed error one layer's INT8 costs, by the bound it hurts more: its
    output noise power over the noise `target[0]` dB allows, or its lost arg-max agreement over
    the loss `target[1]` allows. A layer that flips CTC steps ranks high even when its SQNR looks
    fine, and one that adds noise only where no label changes ranks by the SQNR bound."""
    noise = 10.0 ** ((target[0] - score[0]) / 10.0)
    loss = (1.0 - score[1]) / max(1.0 - target[1], 1e-9)
    return max(noise, loss)


def _protect(
    checker, int8_model, order: Sequence[str], target: tuple[float, float]
) -> tuple[list[str], tuple[float, float]]:
    """Keep layers in FP32, most harmful first (`_harm` of a model with only that layer in
    INT8), until both bounds of `target` hold; then give back to INT8, least harmful first, the
    kept layers that are not needed.

    (Starting where the alone-harms, added up, first fit the target saves evaluations on paper;
    on PP-OCRv4 rec it overshot, and the give-back pass then ended at 8 kept layers after 26
    evaluations instead of 7 after 15.)"""

    def score(kept: Sequence[str]) -> tuple[float, float]:
        text, data, _ = int8_model(kept)
        return checker.score(text, data)

    def ok(s: tuple[float, float]) -> bool:
        return s[0] >= target[0] and s[1] >= target[1]

    alone = {layer: _harm(score([o for o in order if o != layer]), target) for layer in order}
    ranked = sorted(order, key=lambda name: -alone[name])
    kept: list[str] = []
    current = score(kept)
    for layer in ranked:
        if ok(current):
            break
        kept.append(layer)
        current = score(kept)
    for layer in sorted(kept, key=lambda name: alone[name]):  # least harmful first
        trial = [k for k in kept if k != layer]
        s = score(trial)
        if ok(s):
            kept, current = trial, s
    log.info(
        "kept in FP32 for SQNR %.1f dB, agreement %.4f: %s",
        current[0],
        current[1],
        ", ".join(kept) or "none",
    )
    return kept, current

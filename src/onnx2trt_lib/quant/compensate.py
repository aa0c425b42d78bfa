"""Activation-aware weight compensation of the Q/DQ model: least squares for the quantized input.

Why: on models whose inputs are mostly a constant background (rendered text), the INT8 error
of a layer is systematic: the background level rounds the same way at every pixel, and a
depthwise kernel with a small sum turns a tiny weight rounding into a large DC shift. Bias
correction (quant.qdq_bias) removes the mean of that error only. Here each INT8 layer's
float weights and bias are re-solved so that, fed the *quantized* input, the layer reproduces
its FP32 output, and the new weights are then rounded to INT8.

Per layer, with X the FP32 input (im2col patches for a Conv, one group at a time), X~ = Q(X)
exactly as insert-qdq quantizes it (per-tensor scale from the ranges), Z = [X~; 1] and the
original Theta0 = [W b]:

1. least squares with a ridge towards the original:
   min ||Theta0 [X; 1] - Theta Z||^2 + lam ||Theta - Theta0||^2
   => Theta = Theta0 (G + lam I)(H + lam I)^-1, H = Z Z^T, G = [X; 1] Z^T;
   H and G are summed batch by batch (rows subsampled with a fixed seed), so no activation is
   kept; lam = RIDGE * mean(diag H). One Cholesky per layer and group. A layer with fewer
   than ROWS_PER_COLUMN rows per column is left as it is.
2. rounding, per output channel at insert-qdq's scale max|w|/127 of the solved weights:
   `nearest` (the default; the bias stays the least-squares one) or `gptq`: column by column,
   each column's rounding error spread over the columns not yet rounded through the upper
   Cholesky factor of (H + damp I)^-1, the bias column last and never rounded (Frantar et al.
   2022, "GPTQ", arXiv:2210.17323, Algorithm 1). On PP-OCRv4 rec GPTQ at 1% damping lost
   10-16 points at full INT8 where nearest gained 5-18 (two calibration sets): with rendered
   words H is dominated by the background, and the error feedback fits the calibration rows.
3. The written weights W'' = q * scale round-trip through insert-qdq's Q/DQ bit for bit: the
   scale is a float32 fixed point of insert-qdq's rule and every channel holds a +-127 (a GPTQ
   row whose largest weight rounded to 126 is redone with that weight pinned at +-127).

Optional held-out check (CHECK_EVERY > 0): every CHECK_EVERY-th sample is summed apart; the
fit without those rows, rounded, must lower an output channel's local error on them below
(1 - MARGIN) x that of insert-qdq's rounding of the original weights, or the channel keeps its
original weights (the errors come from the held-out rows' H, D and E E^T). Off by default: on
PP-OCRv4 det it did not prevent the loss the compensated model shows on test scenes, and it
lowered rec's INT8 share; quant.api's default instead compares the compensated protection
search with the plain one.

The compensation belongs to a layer only while it is INT8: protection's switch model reads a
float layer's original weight and bias, and `with_biases` writes the compensated ones for the
INT8 layers only (as for quant.qdq_bias's corrected biases). `compensate(quantized=...)` is the
sequential variant (X~ from a Q/DQ model with the previous compensation in place); on
PP-OCRv4 rec, with GPTQ rounding, it diverged (full INT8 0.85 -> 0.003 after one more pass)
as the sequential bias correction did, so quantize uses the local one.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..passes.insert_qdq import INT8_MAX, weight_scale
from .qdq_bias import BiasFix

log = logging.getLogger(__name__)

RIDGE = 0.01  # least-squares ridge towards the original weights, times mean(diag H)
DAMP = 0.01  # GPTQ's damping of H, times mean(diag H) (the paper's 1%)
MAX_ROWS = 16384  # patch rows per layer (a fixed-seed subsample of the calibration rows)
MAX_VALUES = 1 << 23  # and at most this many patch values (rows x all groups' columns)
ROWS_PER_COLUMN = 4  # fewer rows per column (incl. bias) than this: the layer is left as it
# is (least squares and GPTQ would fit the noise of the few calibration rows)
SEED = 0
CHECK_EVERY = 0  # > 0: every CHECK_EVERY-th sample (image, sequence) checks the fit on the others
# (0: no check; 4 lowered PP-OCRv4 rec's INT8 share 91.8% -> 86.7% and did not help det)
MARGIN = 0.05  # an output channel keeps its compensation only where its held-out error is below
# (1 - MARGIN) x that of insert-qdq's rounding of the original weights
LAYER_MARGIN = 0.0  # and a layer only where its channels so chosen lower its held-out error below
# (1 - LAYER_MARGIN) x the original's (0.2 cost rec 2 points and 60 points of INT8 share)
WORKERS = 2  # layers summed and solved side by side (each on one BLAS thread)
ROUNDING = "nearest"  # how the solved weights become INT8: "nearest" or "gptq" (GPTQ at 1%
# damping lost 10-16 points on PP-OCRv4 rec where nearest gained 5-18: benchmarks/results/quant.md)


@dataclass(frozen=True)
class WeightFix:
    """A layer's weight initializer: original and compensated (field names as BiasFix, so
    qdq_bias.with_biases writes either)."""

    layer: str
    node: str
    slot: int
    tensor: str
    original: np.ndarray
    corrected: np.ndarray


# --- the two numerical steps (plain numpy; a leading axis stacks independent groups) ------------


def _damped(h: np.ndarray, fraction: float) -> np.ndarray:
    """H + fraction * mean(diag H) I per group, plus a tiny jitter so a dead input still factors."""
    k = h.shape[-1]
    diag = np.diagonal(h, axis1=-2, axis2=-1)
    mean = diag.mean(axis=-1) if k else np.zeros(h.shape[:-2])
    top = np.maximum(np.max(np.abs(diag), axis=-1, initial=0.0), 1e-30)
    lam = fraction * mean + 1e-12 * top
    return h + lam[..., None, None] * np.eye(k)


def _inverse_factor(hd: np.ndarray) -> np.ndarray:
    """Upper triangular U with U^T U = hd^-1 (GPTQ's Cholesky of the inverse Hessian), from one
    Cholesky: chol(J hd J) = L' (J reverses the order) gives U = J L'^-1 J."""
    rev = hd[..., ::-1, ::-1]
    lower = np.linalg.cholesky(rev)
    return np.linalg.inv(lower)[..., ::-1, ::-1]


def least_squares(
    theta0: np.ndarray, h: np.ndarray, g: np.ndarray, ridge: float = RIDGE
) -> np.ndarray:
    """Theta minimising ||Theta0 A - Theta Z||^2 + lam ||Theta - Theta0||^2 from the sums
    H = Z Z^T and G = A Z^T (lam = ridge * mean(diag H)): Theta0 (G + lam I)(H + lam I)^-1.
    theta0 (..., m, k), h and g (..., k, k)."""
    hd = _damped(h, ridge)
    return _solve(theta0, h, g, hd, _inverse_factor(hd))


def _solve(theta0, h, g, hd, u) -> np.ndarray:
    rhs = theta0.astype(np.float64) @ (g + (hd - h))
    return rhs @ np.swapaxes(u, -1, -2) @ u


def fixed_point_scale(theta: np.ndarray) -> np.ndarray:
    """Per-row float32 scale s = max|w|/127 (insert-qdq's rule) that is also insert-qdq's scale of
    a row whose largest entry is float32(127 * s): then q * s round-trips for any q.
    theta (..., m, k) -> (..., m)."""
    flat = theta.reshape(-1, theta.shape[-1])
    s = weight_scale(flat, 0)
    for _ in range(8):
        again = weight_scale((np.float32(INT8_MAX) * s).astype(np.float32)[:, None], 0)
        if np.array_equal(again, s):
            break
        s = again
    return s.reshape(theta.shape[:-1])


def rtn(theta: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Round to nearest (integers) at per-row `scale`."""
    return np.clip(np.rint(theta / scale[..., None].astype(np.float64)), -INT8_MAX, INT8_MAX)


def gptq(
    theta: np.ndarray,
    u: np.ndarray,
    scale: np.ndarray,
    quantized: int,
    pin: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(integers of the first `quantized` columns, float values of the rest) of `theta`
    (..., m, k) rounded column by column, each column's error passed on to the later ones
    through U (..., k, k), the upper Cholesky factor of the damped H^-1 (GPTQ Algorithm 1,
    block size 1). `pin` (..., m): per row a column forced to +-127 (sign of its running
    value; -1: none), so that the row's scale stays max|q| = 127."""
    w = theta.astype(np.float64).copy()
    s = scale.astype(np.float64)
    q = np.zeros((*w.shape[:-1], quantized))
    for i in range(quantized):
        col = w[..., i]
        qi = np.clip(np.rint(col / s), -INT8_MAX, INT8_MAX)
        if pin is not None:
            qi = np.where(pin == i, np.where(col < 0, -INT8_MAX, INT8_MAX), qi)
        q[..., i] = qi
        err = (col - qi * s) / u[..., i, i][..., None]
        w[..., i + 1 :] -= err[..., None] * u[..., None, i, i + 1 :]
    return q, w[..., quantized:]


def compensate_matrix(
    theta0: np.ndarray,
    h: np.ndarray,
    g: np.ndarray,
    weights: int,
    ridge: float = RIDGE,
    damp: float = DAMP,
    rounding: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(integers (..., m, weights), per-row float32 scale, float rest (..., m, k - weights)):
    least squares, then GPTQ (or, `rounding="nearest"`, round to nearest) with every row's
    scale reaching 127 exactly. rounding: "nearest" or "gptq" (None: the module's ROUNDING)."""
    rounding = rounding or ROUNDING
    if rounding not in ("nearest", "gptq"):
        raise ValueError(f"rounding must be 'nearest' or 'gptq', not {rounding!r}")
    hd = _damped(h, ridge)
    u = _inverse_factor(hd)
    theta = _solve(theta0, h, g, hd, u)
    scale = fixed_point_scale(theta[..., :weights])
    if rounding == "nearest":
        # the bias stays the least-squares one: refitting it to the mean residual after
        # rounding (matching the calibration rows' mean exactly) cost PP-OCRv4 rec 13 points
        return rtn(theta[..., :weights], scale), scale, theta[..., weights:]
    if damp != ridge:
        u = _inverse_factor(_damped(h, damp))
    q, rest = gptq(theta, u, scale, weights)
    short = np.max(np.abs(q), axis=-1, initial=0.0) < INT8_MAX
    short &= np.max(np.abs(theta[..., :weights]), axis=-1, initial=0.0) > 0
    if np.any(short):  # redo those rows with their largest weight pinned at +-127
        pin = np.where(short, np.argmax(np.abs(theta[..., :weights]), axis=-1), -1)
        q2, rest2 = gptq(theta, u, scale, weights, pin)
        q = np.where(short[..., None], q2, q)
        rest = np.where(short[..., None], rest2, rest)
    return q, scale, rest


# --- layers: how a Conv/Gemm/MatMul reads as (rows x cols) problems ------------------------------


@dataclass(frozen=True)
class Layer:
    """One weighted node seen as Y = W X (+ b) per group: W (out, cols) per group."""

    name: str
    op: str
    x: str  # the data input
    weight: str  # the weight initializer
    w: np.ndarray  # original weight, as stored
    groups: int
    bias: BiasFix | None  # where the bias lives (qdq_bias slot), None: no bias column
    conv: dict | None  # a Conv: kernel, strides, pads, dilations; a Gemm: transB

    def matrices(self) -> np.ndarray:
        """The (groups, out/groups, cols) weight matrices."""
        if self.op == "Conv":
            return self.w.reshape(self.groups, self.w.shape[0] // self.groups, -1)
        return (self.w if self.transposed else self.w.T)[None]

    @property
    def transposed(self) -> bool:  # Gemm(transB=1): B is already (out, in)
        return self.op == "Gemm" and bool(self.conv and self.conv.get("transB"))

    def stored(self, mats: np.ndarray) -> np.ndarray:
        """The weight initializer holding the (groups, out/groups, cols) matrices `mats`."""
        if self.op == "Conv":
            return mats.reshape(self.w.shape).astype(np.float32)
        m = mats[0]
        return (m if self.transposed else m.T).astype(np.float32)


def find_layers(
    model: onnx.ModelProto, layers: Collection[str], slots: Mapping[str, tuple]
) -> tuple[list[Layer], dict[str, str]]:
    """(layers to compensate, layer -> why not) among `layers` of `model` (bias_slots' output:
    weights are initializers)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for t in n.input:
            consumers[t] = consumers.get(t, 0) + 1
    want = set(layers)
    found, skipped = [], {}
    for node in graph.node:
        if node.name not in want:
            continue
        why = None
        if len(node.input) < 2 or node.input[1] not in inits:
            why = "weight is not an initializer"
        elif consumers.get(node.input[1], 0) != 1:
            why = "weight shared by several nodes"
        if why:
            skipped[node.name] = why
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        conv: dict[str, Any] | None = None
        groups = 1
        if w.dtype != np.float32:
            why = f"weight is {w.dtype}"
        elif node.op_type == "Conv":
            groups = int(attrs.get("group", 1))
            spatial = w.ndim - 2
            pad = attrs.get("auto_pad", b"NOTSET")
            pad = pad.decode() if isinstance(pad, bytes) else pad
            if spatial < 1:
                why = f"Conv weight has {w.ndim} dimension(s)"
            elif pad not in ("NOTSET", "VALID"):
                why = f"auto_pad {pad}"
            else:
                conv = {
                    "kernel": tuple(w.shape[2:]),
                    "strides": tuple(attrs.get("strides", [1] * spatial)),
                    "dilations": tuple(attrs.get("dilations", [1] * spatial)),
                    "pads": tuple(attrs.get("pads", [0] * 2 * spatial))
                    if pad == "NOTSET"
                    else (0,) * 2 * spatial,
                }
        elif node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
                why = "Gemm with transA or alpha != 1"
            elif len(node.input) > 2 and node.input[2] and attrs.get("beta", 1.0) != 1.0:
                why = "Gemm with beta != 1"
            else:
                conv = {"transB": int(attrs.get("transB", 0))}
        elif node.op_type == "MatMul":
            if w.ndim != 2:
                why = "MatMul weight is not 2-D"
        else:
            why = f"{node.op_type} is not compensated"
        if why:
            skipped[node.name] = why
            continue
        bias = None
        if node.name in slots:
            bnode, slot, b, y, axis = slots[node.name]
            value = numpy_helper.to_array(inits[b]).astype(np.float32)
            bias = BiasFix(node.name, bnode, slot, b, y, axis, value, value)
        found.append(
            Layer(node.name, node.op_type, node.input[0], node.input[1], w, groups, bias, conv)
        )
    return found, skipped


def patches(x: np.ndarray, conv: Mapping, rows: np.ndarray | None) -> np.ndarray:
    """im2col of x (N, C, *spatial) for `conv`: (rows, C, *kernel), rows = the output positions
    (n, *out) in C order, or those listed in `rows` (flat indices). Only those positions are
    gathered (no padded copy of x: compensation samples a few thousand of them)."""
    spatial = x.ndim - 2
    pads, ks, st, dl = conv["pads"], conv["kernel"], conv["strides"], conv["dilations"]
    size = x.shape[2:]
    out = [
        (size[i] + pads[i] + pads[i + spatial] - (ks[i] - 1) * dl[i] - 1) // st[i] + 1
        for i in range(spatial)
    ]
    if rows is None:
        rows = np.arange(x.shape[0] * int(np.prod(out)))
    pos = np.unravel_index(np.asarray(rows, np.int64), (x.shape[0], *out))
    n = len(pos[0])
    valid = np.ones((n, *ks), bool)
    at: list[np.ndarray] = []
    for i in range(spatial):  # each tap's input coordinate on axis i: (rows, 1.., k_i, ..1)
        shape = [n] + [1] * spatial
        shape[1 + i] = ks[i]
        c = (pos[1 + i][:, None] * st[i] - pads[i] + np.arange(ks[i]) * dl[i]).reshape(shape)
        valid &= (c >= 0) & (c < size[i])
        at.append(np.clip(c, 0, size[i] - 1))
    first = pos[0].reshape([n] + [1] * spatial)
    # advanced indices around a slice: the broadcast (rows, *kernel) axes come first, C last
    index: tuple[Any, ...] = (first, slice(None), *at)
    picked = np.moveaxis(x[index], -1, 1)  # (rows, C, *kernel)
    return np.where(valid[:, None], picked, np.zeros((), x.dtype))


def fake_quant(x: np.ndarray, scale: np.float32) -> np.ndarray:
    """QuantizeLinear -> DequantizeLinear with int8 zero point 0, in float32 as ONNX Runtime does."""
    s = np.float32(scale)
    return (np.clip(np.rint(x.astype(np.float32) / s), -128, 127) * s).astype(np.float32)


def _parts_of(x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """A batch as its parts along the rows (a 1-D tensor has no rows: joined)."""
    parts = [x] if isinstance(x, np.ndarray) else [np.asarray(p) for p in x]
    if len(parts) > 1 and parts[0].ndim < 2:
        return [np.concatenate(parts)]
    return parts


class _Sums:
    """Per layer and group: H = Z Z^T and D = (A - Z) Z^T over the sampled rows (G = H + D:
    D, the quantization error's part, is summed on its own so float32 products keep it)."""

    def __init__(self, layer: Layer, scale: np.float32, batches: int) -> None:
        self.layer, self.scale = layer, scale
        groups, _, cols = layer.matrices().shape
        k = cols + (layer.bias is not None)
        self.h = np.zeros((groups, k, k))
        # np.zeros, not zeros_like: untouched pages stay unallocated (zeros_like writes them:
        # 66 MB for each 2882-column layer that then has too few rows to be summed)
        self.d = np.zeros(self.h.shape)
        # the held-out rows (every CHECK_EVERY-th sample) on their own: H, D and E E^T, in
        # float32 (a quarter of the rows; they only decide, and it halves their memory)
        self.hc = np.zeros(self.h.shape if CHECK_EVERY else (0, 0, 0), np.float32)
        self.dc = np.zeros(self.hc.shape, np.float32)
        self.ec = np.zeros(self.hc.shape, np.float32)
        self.samples = 0  # samples (leading axis) seen so far
        self.check_rows = 0
        self.rng = np.random.default_rng([SEED, *layer.name.encode()])
        # never fewer than ROWS_PER_COLUMN per column: a layer wider than MAX_ROWS / 4 columns
        # would otherwise be skipped whatever the data
        rows = max(ROWS_PER_COLUMN * k, min(MAX_ROWS, MAX_VALUES // (groups * k)))
        self.per_batch = max(1, -(-rows // max(1, batches)))
        self.batches = batches
        self.rows = 0
        self.too_few = False  # fewer than ROWS_PER_COLUMN rows per column in all the feeds

    def enough(self, n: int) -> bool:
        """False (and no more sums) once a batch of n rows says the feeds hold too few."""
        if self.rows == 0 and n * self.batches < ROWS_PER_COLUMN * self.h.shape[-1]:
            self.too_few = True
        return not self.too_few

    def add(
        self,
        x: np.ndarray | Sequence[np.ndarray],
        xq: np.ndarray | Sequence[np.ndarray] | None = None,
    ) -> None:
        """Sum one batch: x the layer's FP32 input, whole or as consecutive parts of its rows
        (the same sums as their concatenation, which is never made: only the sampled rows are
        gathered); xq its quantized input where it comes from a Q/DQ model (the sequential
        variant), else Q(x)."""
        xs, xqs = _parts_of(x), None if xq is None else _parts_of(xq)
        first = xs[0]
        samples = sum(len(p) for p in xs) if first.ndim > 1 else 1
        layer = self.layer
        groups = self.h.shape[0]
        if layer.op == "Conv":
            conv = layer.conv
            assert conv is not None  # find_layers gives every Conv its geometry
            spatial = first.ndim - 2
            st, dl, ks, pads = (conv[k] for k in ("strides", "dilations", "kernel", "pads"))
            out = [
                (first.shape[2 + i] + pads[i] + pads[i + spatial] - (ks[i] - 1) * dl[i] - 1)
                // st[i]
                + 1
                for i in range(spatial)
            ]
            if not self.enough(samples * int(np.prod(out))):
                return
            per_sample = int(np.prod(out))
            take = self._pick(samples * per_sample)

            def pick(t: np.ndarray, at: np.ndarray) -> np.ndarray:
                return patches(t, conv, at)
        else:
            if not self.enough(samples * int(np.prod(first.shape[1:-1]))):
                return
            per_sample = int(np.prod(first.shape[1:-1]))
            take = self._pick(samples * per_sample)

            def pick(t: np.ndarray, at: np.ndarray) -> np.ndarray:
                return t.reshape(-1, t.shape[-1])[at]

        starts = np.cumsum([0] + [len(p) * per_sample for p in xs])

        def rows(parts: Sequence[np.ndarray]) -> np.ndarray:  # the sampled rows, float32
            got = [
                pick(p, take[(take >= a) & (take < b)] - a)
                for p, a, b in zip(parts, starts[:-1], starts[1:], strict=True)
            ]
            return np.asarray(got[0] if len(got) == 1 else np.concatenate(got), np.float32)

        def grouped(t: np.ndarray) -> np.ndarray:  # (groups, rows, cols)
            return np.ascontiguousarray(np.moveaxis(t.reshape(len(take), groups, -1), 1, 0))

        a = grouped(rows(xs))
        # zero padding quantizes to zero: Q commutes with im2col
        z = fake_quant(a, self.scale) if xqs is None else grouped(rows(xqs))
        e = a - z
        if layer.bias is not None:
            z = np.concatenate([z, np.ones((*z.shape[:2], 1), np.float32)], axis=2)
            e = np.concatenate([e, np.zeros((*e.shape[:2], 1), np.float32)], axis=2)
        zt = np.swapaxes(z, 1, 2)
        self.h += zt @ z
        self.d += np.swapaxes(e, 1, 2) @ z
        self.rows += len(take)
        every = CHECK_EVERY
        check = (self.samples + take // max(per_sample, 1)) % max(every, 1) == every - 1
        self.samples += samples
        if every and np.any(check):
            zc, ec = z[:, check], e[:, check]
            self.hc += np.swapaxes(zc, 1, 2) @ zc
            self.dc += np.swapaxes(ec, 1, 2) @ zc
            self.ec += np.swapaxes(ec, 1, 2) @ ec
            self.check_rows += int(np.sum(check))

    def _pick(self, n: int) -> np.ndarray:
        if n <= self.per_batch:
            return np.arange(n)
        return np.sort(self.rng.choice(n, self.per_batch, replace=False))


def held_out_errors(
    theta0: np.ndarray, theta: np.ndarray, h: np.ndarray, d: np.ndarray, ee: np.ndarray
) -> np.ndarray:
    """Per output row (..., m): the sum over rows of (Theta0 a - Theta z)^2, from the sums
    H = Z Z^T, D = E Z^T and E E^T over those rows (E = A - Z, the input's quantization error):
    Theta0 a - Theta z = Theta0 e + (Theta0 - Theta) z, so no term is as large as the outputs."""
    theta0 = theta0.astype(np.float64)
    delta = theta0 - theta.astype(np.float64)
    own = np.einsum("...mk,...kl,...ml->...m", theta0, ee, theta0)
    cross = np.einsum("...mk,...kl,...ml->...m", theta0, d, delta)
    rest = np.einsum("...mk,...kl,...ml->...m", delta, h, delta)
    return own + 2.0 * cross + rest


def insert_qdq_rounded(mats: np.ndarray) -> np.ndarray:
    """Weight matrices (..., m, cols) as insert-qdq's Q/DQ gives them back (per row
    max|w|/127, float32 as ONNX Runtime computes it)."""
    flat = mats.reshape(-1, mats.shape[-1]).astype(np.float32)
    scale = weight_scale(flat, 0)
    return fake_quant_rows(flat, scale).reshape(mats.shape)


def fake_quant_rows(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """QuantizeLinear -> DequantizeLinear of rows `w` (r, c) at per-row `scale` (r,), float32."""
    s = scale.astype(np.float32)[:, None]
    return (np.clip(np.rint(w.astype(np.float32) / s), -128, 127) * s).astype(np.float32)


@dataclass(frozen=True)
class Solved:
    """One layer's compensation: weight as stored, bias (None: no bias slot), the output
    channels that keep it, and the held-out errors (compensated fit, original rounding)."""

    weight: np.ndarray
    bias: np.ndarray | None
    kept: np.ndarray  # (groups * out,) bool
    error: float
    original_error: float


def _theta0(layer: Layer) -> np.ndarray:
    mats = layer.matrices().astype(np.float64)
    if layer.bias is None:
        return mats
    groups, out, _ = mats.shape
    bias = layer.bias.original.reshape(groups, out, 1).astype(np.float64)
    return np.concatenate([mats, bias], axis=2)


def _rounded(q: np.ndarray, scale: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """[q * scale, rest] as float64 (the weights exactly as written)."""
    w = (q.astype(np.float32) * scale[..., None]).astype(np.float32)
    return np.concatenate([w.astype(np.float64), rest], axis=-1)


def solve(
    layer: Layer, sums: _Sums, rounding: str | None = None, margin: float | None = None
) -> Solved:
    """One layer's compensation from its sums, checked on the held-out rows: fitted without
    them, an output channel keeps its compensation where it lowers the held-out error of
    insert-qdq's rounding of the original weights by more than `margin` (MARGIN); the
    weights written are then fitted on all rows. Without held-out rows every channel keeps it."""
    margin = MARGIN if margin is None else margin
    theta0 = _theta0(layer)
    groups, out, k = theta0.shape
    cols = layer.matrices().shape[2]
    n = max(sums.rows, 1)
    h = sums.h / n
    q, scale, rest = compensate_matrix(theta0, h, h + sums.d / n, cols, rounding=rounding)
    theta = _rounded(q, scale, rest)
    kept = np.ones((groups, out), bool)
    error = original = 0.0
    fit = sums.rows - sums.check_rows
    if sums.check_rows and fit:
        hf = (sums.h - sums.hc) / fit
        qf, sf, rf = compensate_matrix(
            theta0, hf, hf + (sums.d - sums.dc) / fit, cols, rounding=rounding
        )
        base = theta0.copy()
        base[..., :cols] = insert_qdq_rounded(theta0[..., :cols])
        c = sums.check_rows
        mine = held_out_errors(theta0, _rounded(qf, sf, rf), sums.hc / c, sums.dc / c, sums.ec / c)
        theirs = held_out_errors(theta0, base, sums.hc / c, sums.dc / c, sums.ec / c)
        kept = mine < (1.0 - margin) * theirs
        error = float(np.sum(np.where(kept, mine, theirs)))
        original = float(np.sum(theirs))
        theta = np.where(kept[..., None], theta, theta0)
    w = layer.stored(theta[..., :cols].astype(np.float32))
    b = (
        None
        if layer.bias is None
        else theta[..., cols].astype(np.float32).reshape(layer.bias.original.shape)
    )
    return Solved(w, b, kept.reshape(-1), error, original)


def compensate(
    model: onnx.ModelProto,
    ranges: Mapping[str, float],
    feeds: Sequence[Mapping[str, np.ndarray]],
    layers: Collection[str],
    slots: Mapping[str, tuple],
    quantized: onnx.ModelProto | None = None,
    rounding: str | None = None,
) -> tuple[dict[str, BiasFix], dict[str, WeightFix], dict[str, str]]:
    """(layer -> BiasFix, layer -> WeightFix, layer -> why skipped) for the INT8 `layers` of
    `model` (qdq_bias.bias_slots' output, `slots` its slots), from one FP32 run on `feeds`
    with the layers' inputs exposed. `quantized` (the sequential variant): a Q/DQ model of
    `model` whose layers' quantized inputs are the X~ (upstream INT8 error included) instead
    of Q(FP32 input)."""
    from ..passes.insert_qdq import activation_scale
    from ._stats import tensor_parts
    from .accuracy import run_pool

    rounding = rounding or ROUNDING
    found, skipped = find_layers(model, layers, slots)
    for layer in found:
        if layer.x not in ranges:
            skipped[layer.name] = f"no range for {layer.x!r}"
    found = [layer for layer in found if layer.x in ranges]
    if not found:
        return {}, {}, skipped
    sums = {
        layer.name: _Sums(layer, np.float32(activation_scale(ranges[layer.x])), len(feeds))
        for layer in found
    }
    by_input: dict[str, list[str]] = {}
    for layer in found:
        by_input.setdefault(layer.x, []).append(layer.name)

    with _one_blas_thread():
        pool = run_pool(WORKERS) if WORKERS > 1 else None

        def each(work, items) -> list:
            return list(pool.map(work, items)) if pool is not None else [work(i) for i in items]

        if quantized is None:
            for values in tensor_parts(model, feeds, list(by_input), workers=WORKERS):

                def add(name: str) -> None:
                    for layer in by_input[name]:
                        sums[layer].add(values[name])  # noqa: B023 (used before the next batch)

                each(add, list(by_input))  # a layer's sums depend on its own rows only
        else:
            _paired(model, quantized, feeds, found, sums)
        ready = [
            layer
            for layer in found
            if not sums[layer.name].too_few
            and sums[layer.name].rows >= ROWS_PER_COLUMN * sums[layer.name].h.shape[-1]
        ]
        solutions = dict(
            zip(
                [layer.name for layer in ready],
                each(lambda layer: solve(layer, sums[layer.name], rounding), ready),
                strict=True,
            )
        )
    biases, weights = {}, {}
    for layer in found:
        k = sums[layer.name].h.shape[-1]
        if layer.name not in solutions:
            skipped[layer.name] = f"{sums[layer.name].rows or 'too few'} rows for {k} columns"
            continue
        solved = solutions[layer.name]
        if not np.any(solved.kept) or solved.error > (1.0 - LAYER_MARGIN) * solved.original_error:
            skipped[layer.name] = (
                f"held-out error {solved.original_error:.3g} not lowered by compensation"
            )
            continue
        w, b = solved.weight, solved.bias
        weights[layer.name] = WeightFix(layer.name, layer.name, 1, layer.weight, layer.w, w)
        fix = layer.bias
        if b is not None and fix is not None:
            biases[layer.name] = BiasFix(
                fix.layer, fix.node, fix.slot, fix.tensor, fix.output, fix.axis, fix.original, b
            )
    log.info(
        "compensate: %d layer(s); left as they are: %s",
        len(weights),
        "; ".join(f"{name} ({why})" for name, why in skipped.items()) or "none",
    )
    return biases, weights, skipped


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS/LAPACK on one thread while the layers' sums and solves run WORKERS at a
    time: OpenBLAS's own threads wait on each other whenever another process holds a core
    (PP-OCRv4 rec at load 2-3: 13-19 s with 2 BLAS threads, 3.5-5 s with one), and one thread
    per call makes each layer's numbers the same whatever the machine's core count."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


def _paired(model, quantized, feeds, found: Sequence[Layer], sums: Mapping[str, _Sums]) -> None:
    """Sums from two runs per batch: the FP32 inputs of `model` and the quantized inputs (the
    DequantizeLinear outputs the layers read) of the Q/DQ model `quantized`."""
    from ..errors import RuntimeExecutionError
    from .accuracy import session

    qin = {n.name: n.input[0] for n in quantized.graph.node}
    names = sorted({layer.x for layer in found})
    qnames = sorted({qin[layer.name] for layer in found if layer.name in qin})
    fp, qs = session(model, extra_outputs=names), session(quantized, extra_outputs=qnames)
    inputs = {i.name for i in fp.get_inputs()}
    for index, feed in enumerate(feeds):
        data = {k: v for k, v in feed.items() if k in inputs}
        try:
            xs = dict(zip(names, fp.run(names, data), strict=True))
            xqs = dict(zip(qnames, qs.run(qnames, data), strict=True))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeExecutionError(f"batch {index}: ONNX Runtime failed: {first}") from None
        for layer in found:
            xq = xqs.get(qin.get(layer.name, ""))
            sums[layer.name].add(xs[layer.x], xq)

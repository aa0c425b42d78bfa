"""A small residual CNN trained in pure numpy on sklearn's bundled 8x8 digits, exported to ONNX.

Used by the quantization tests and benchmarks/bench_quant_accuracy.py: a real trained model
(not random weights) whose INT8 accuracy can be compared with FP32, built in a few seconds
without torch. Architecture (NCHW, batch dim symbolic):

    x[N,1,8,8] -> Conv 3x3 (8) -> Relu -> Conv 3x3 s2 (16) -> Relu = r
               -> Conv 3x3 (16) -> Add(r) -> Relu -> Flatten -> Gemm(transB=1, 10) -> logits
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def load_split(seed: int = 0) -> dict[str, np.ndarray]:
    """Digits scaled to [0, 1] as N,1,8,8 float32; fixed split: 1097 train, 200 calib, 500 test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    return {
        "x_train": x[:1097],
        "y_train": y[:1097],
        "x_calib": x[1097:1297],
        "y_calib": y[1097:1297],
        "x_test": x[1297:],
        "y_test": y[1297:],
    }


def _im2col(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    cols = np.empty((n, c, k, k, oh, ow), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * k * k)


def _col2im(dcols: np.ndarray, shape: tuple, k: int, stride: int, pad: int) -> np.ndarray:
    n, c, h, w = shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    d = dcols.reshape(n, oh, ow, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    dx = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dcols.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += d[:, :, i, j]
    return dx[:, :, pad : pad + h, pad : pad + w]


def _conv(x, w, b, stride, cache):
    n, _, h, _ = x.shape
    o, _, k, _ = w.shape
    oh = (h + 2 - k) // stride + 1
    cols = _im2col(x, k, stride, 1)
    out = cols @ w.reshape(o, -1).T + b
    cache.append((x.shape, cols, stride))
    return out.reshape(n, oh, oh, o).transpose(0, 3, 1, 2)


def _conv_back(dout, w, entry):
    shape, cols, stride = entry
    o, _, k, _ = w.shape
    d = dout.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(0)
    dx = _col2im(d @ w.reshape(o, -1), shape, k, stride, 1)
    return dx, dw, db


def _forward(p, x, caches):
    a1 = _conv(x, p["w1"], p["b1"], 1, caches)
    r1 = np.maximum(a1, 0)
    a2 = _conv(r1, p["w2"], p["b2"], 2, caches)
    r2 = np.maximum(a2, 0)
    a3 = _conv(r2, p["w3"], p["b3"], 1, caches)
    s = a3 + r2
    r3 = np.maximum(s, 0)
    f = r3.reshape(len(x), -1)
    logits = f @ p["w4"].T + p["b4"]
    return logits, (a1, r1, a2, r2, s, f)


def _grads(p, x, y):
    caches: list = []
    logits, (a1, r1, a2, r2, s, f) = _forward(p, x, caches)
    z = logits - logits.max(1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    dlog = prob.copy()
    dlog[np.arange(len(y)), y] -= 1
    dlog /= len(y)
    g = {"w4": dlog.T @ f, "b4": dlog.sum(0)}
    ds = (dlog @ p["w4"]).reshape(s.shape) * (s > 0)
    dr2, g["w3"], g["b3"] = _conv_back(ds, p["w3"], caches[2])
    dr2 = dr2 + ds
    da2 = dr2 * (a2 > 0)
    dr1, g["w2"], g["b2"] = _conv_back(da2, p["w2"], caches[1])
    da1 = dr1 * (a1 > 0)
    _, g["w1"], g["b1"] = _conv_back(da1, p["w1"], caches[0])
    return g


def train(data: dict[str, np.ndarray], *, epochs: int = 25, seed: int = 0) -> dict[str, np.ndarray]:
    """Adam on softmax cross-entropy; a couple of seconds on one core."""
    rng = np.random.default_rng(seed)

    def he(*shape):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    p = {
        "w1": he(8, 1, 3, 3),
        "b1": np.zeros(8, np.float32),
        "w2": he(16, 8, 3, 3),
        "b2": np.zeros(16, np.float32),
        "w3": he(16, 16, 3, 3) * 0.5,
        "b3": np.zeros(16, np.float32),
        "w4": he(10, 256),
        "b4": np.zeros(10, np.float32),
    }
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    x, y = data["x_train"], data["y_train"]
    step, lr = 0, 3e-3
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), 64):
            idx = order[start : start + 64]
            g = _grads(p, x[idx], y[idx])
            step += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v2[k] = 0.999 * v2[k] + 0.001 * g[k] ** 2
                mh, vh = m[k] / (1 - 0.9**step), v2[k] / (1 - 0.999**step)
                p[k] = (p[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    return p


def to_onnx(p: dict[str, np.ndarray], *, opset: int = 17) -> onnx.ModelProto:
    conv = functools.partial(helper.make_node, "Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        conv(["x", "w1", "b1"], ["a1"], name="conv1"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        conv(["r1", "w2", "b2"], ["a2"], name="conv2", strides=[2, 2]),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
        conv(["r2", "w3", "b3"], ["a3"], name="conv3"),
        helper.make_node("Add", ["a3", "r2"], ["s"], name="residual_add"),
        helper.make_node("Relu", ["s"], ["r3"], name="relu3"),
        helper.make_node("Flatten", ["r3"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["logits"], name="fc", transB=1),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in p.items()]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="digits_cnn"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def numpy_logits(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return _forward(p, x, [])[0]


@functools.cache
def trained() -> tuple[bytes, dict]:
    """(serialized ONNX model, data split); cached per process so tests train once."""
    data = load_split()
    params = train(data)
    return to_onnx(params).SerializeToString(), data


def max_abs_ranges(model: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    """amax per tensor (max |x|) on calibration data: a plain MinMax calibrator via ONNX Runtime."""
    from onnx2trt_lib.quant.accuracy import run

    names = [o for n in model.graph.node for o in n.output]
    values = run(model, [{"x": x}], extra_outputs=names)
    return {
        "x": float(np.abs(x).max()),
        **{k: float(np.abs(v[0]).max()) for k, v in values.items()},
    }


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    from onnx2trt_lib.quant.accuracy import run

    logits = run(model, [{"x": x}])["logits"][0]
    return float((logits.argmax(1) == y).mean())

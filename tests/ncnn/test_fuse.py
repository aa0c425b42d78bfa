"""Activation fusion and requantize fusion (ncnn/fuse.py) on hand-made ncnn models, checked in
the ncnn runtime: a fused model must compute what the unfused one computes (FP32: to rounding;
INT8: the same int8 codes, so to a few rounding ties), and the written .param/.bin must be what
ncnn's loaders read (int8_scale_term 101/102 with the output scale after the input scale)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnx2trt_lib.ncnn.fuse import fuse_activations, requantize_targets
from onnx2trt_lib.ncnn.int8 import weight_scales, write_int8
from onnx2trt_lib.ncnn.param import Param, read_floats, read_param, walk_bin
from onnx2trt_lib.ncnn.table import NcnnTable

C = 16  # channels: a multiple of 8, so ncnn's packed int8 kernels run


def _conv(name, bottom, top, k, *, act=""):
    return (
        f"Convolution {name} 1 1 {bottom} {top} 0={C} 1={k} 4={k // 2} 5=1 6={C * C * k * k}{act}"
    )


def _dw(name, bottom, top, *, act=""):
    return f"ConvolutionDepthWise {name} 1 1 {bottom} {top} 0={C} 1=3 4=1 5=1 6={C * 9} 7={C}{act}"


# conv -> HardSwish -> dw -> leaky ReLU -> conv -> Split -> (conv, dw) -> Concat: every pair of
# convolutions meets directly or through a Split once the activations are fused
LAYERS = [
    "Input in0 0 1 in0 0=12 1=10 2=16",
    _conv("c0", "in0", "a", 3),
    "HardSwish hs0 1 1 a b 0=0.166666672 1=0.5",
    _dw("d0", "b", "c"),
    "ReLU r0 1 1 c d 0=0.1",
    _conv("c1", "d", "e", 1),
    "Split sp 1 2 e e0 e1",
    _conv("c2", "e0", "f", 3),
    _dw("d1", "e1", "g"),
    "Clip cl 1 1 g h 0=-1.5 1=2.5",
    "Concat cat 2 1 f h out0",
]


def _model(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    text = f"7767517\n{len(LAYERS)} {len(LAYERS) + 3}\n" + "\n".join(LAYERS) + "\n"
    (tmp_path / "m.param").write_text(text)
    param = read_param(tmp_path / "m.param")
    chunks = []
    for layer in param.layers:
        if layer.type in ("Convolution", "ConvolutionDepthWise"):
            n = int(layer.get(6))
            w = rng.normal(0, 1 / np.sqrt(n / C), n).astype(np.float32)
            chunks += [
                struct.pack("<I", 0),
                w.tobytes(),
                rng.normal(0, 0.1, C).astype("<f4").tobytes(),
            ]
    blob = b"".join(chunks)
    (tmp_path / "m.bin").write_bytes(blob)
    # the blob count of a hand-made file: every distinct top
    param = Param(param.layers, len({t for x in param.layers for t in x.tops}))
    return param, blob


def _net(tmp_path, stem, text, blob, *, int8):
    from onnx2trt_lib import _optional

    ncnn = _optional.ncnn()
    (tmp_path / f"{stem}.param").write_text(text)
    (tmp_path / f"{stem}.bin").write_bytes(blob)
    net = ncnn.Net()
    net.opt.num_threads = 1
    net.opt.use_int8_inference = int8
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    assert net.load_param(str(tmp_path / f"{stem}.param")) == 0
    assert net.load_model(str(tmp_path / f"{stem}.bin")) == 0
    return net


def _out(net, x):
    from onnx2trt_lib.ncnn.runtime import run

    return run(net, {"in0": x}, ["out0"])["out0"]


def _table(param, blob, scale=None):
    segs = walk_bin(param, blob)
    convs = [x for x in param.layers if x.type in ("Convolution", "ConvolutionDepthWise")]
    weights = {x.name: weight_scales(x, read_floats(blob, segs[x.name][0])) for x in convs}
    inputs = {x.name: (scale or 127 / 4.0) for x in convs}
    return NcnnTable(weights, inputs)


@pytest.fixture
def need_ncnn():
    from onnx2trt_lib import _optional

    if not _optional.available("ncnn"):
        pytest.skip("ncnn is not installed (pip install 'onnx2trt_lib[ncnn]')")


def test_activations_fused_into_the_layer_before(tmp_path, need_ncnn):
    param, blob = _model(tmp_path)
    fused, done = fuse_activations(param)
    assert [(f.layer, f.into) for f in done] == [("c0", "hs0"), ("d0", "r0"), ("d1", "cl")]
    names = [x.name for x in fused.layers]
    assert "hs0" not in names and "r0" not in names and "cl" not in names
    c0 = fused.layer("c0")
    assert c0.get(9) == 6 and c0.tops == ["b"] and (-23310, "2,0.166666672,0.5") in c0.params
    assert fused.layer("d0").get(9) == 2 and fused.layer("d1").get(9) == 3
    assert fused.layer("c1").get(9) == 0  # followed by a Split, not an activation
    before = walk_bin(param, blob)
    assert walk_bin(fused, blob) == {k: v for k, v in before.items() if k in names}  # .bin as is
    again, none = fuse_activations(fused)
    assert none == [] and again.text() == fused.text()  # idempotent
    x = np.random.default_rng(1).normal(size=(16, 10, 12)).astype(np.float32)
    ref = _out(_net(tmp_path, "a", param.text(), blob, int8=False), x)
    got = _out(_net(tmp_path, "b", fused.text(), blob, int8=False), x)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_requantize_fusion_equals_the_unfused_int8_model(tmp_path, need_ncnn):
    param, blob = _model(tmp_path)
    fused, _ = fuse_activations(param)
    segs = walk_bin(fused, blob)
    table = _table(fused, blob)
    plain_text, plain_bin, q1 = write_int8(fused, blob, segs, table, requantize=False)
    rq_text, rq_bin, q2 = write_int8(fused, blob, segs, table)
    assert q1 == q2 == ["c0", "d0", "c1", "c2", "d1"]
    (tmp_path / "rq.param").write_text(rq_text)
    rq = read_param(tmp_path / "rq.param")
    terms = {x.name: int(x.get(8)) for x in rq.layers if x.get(8)}
    # c0 -> d0 -> c1 -> Split -> (c2, d1); c2 and d1 feed a Concat and stay FP32 out
    assert terms == {"c0": 102, "d0": 101, "c1": 102, "c2": 2, "d1": 1}
    rq_segs = walk_bin(rq, rq_bin)  # the reader walks what it wrote, 5 arrays per fused layer
    assert len(rq_segs["c0"]) == 5 and len(rq_segs["c2"]) == 4
    top = np.frombuffer(rq_bin, "<f4", 1, rq_segs["c0"][4].offset)[0]
    assert top == np.float32(table.inputs["d0"])
    xs = np.random.default_rng(2).normal(size=(4, 16, 10, 12)).astype(np.float32)
    plain = _net(tmp_path, "plain", plain_text, plain_bin, int8=True)
    fast = _net(tmp_path, "rq", rq_text, rq_bin, int8=True)
    for x in xs:
        a, b = _out(plain, x), _out(fast, x)
        # the same int8 codes up to rounding ties: a tie moves one code of one activation by
        # one step, which the next layer spreads over its outputs
        assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()
        assert np.mean(np.abs(a - b) > 1e-4 * np.abs(a).max()) < 0.05


def test_split_consumers_with_different_scales_are_not_fused(tmp_path):
    param, blob = _model(tmp_path)
    fused, _ = fuse_activations(param)
    scales = {x.name: 127 / 4.0 for x in fused.layers if x.type.startswith("Convolution")}
    assert "c1" in requantize_targets(fused, scales)
    scales["d1"] = 127 / 3.0  # c1's output read with two different scales
    assert "c1" not in requantize_targets(fused, scales)
    del scales["d0"]  # d0 kept in FP32: c0 writes FP32 for it
    targets = requantize_targets(fused, scales)
    assert "c0" not in targets and "d0" not in targets


def _mobile_block_onnx(path):
    """Conv -> HardSwish -> depthwise Conv -> HardSwish -> 1x1 Conv: what pnnx writes with
    HardSwish as layers of their own."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)

    def w(name, shape):
        return numpy_helper.from_array(
            rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape).astype(np.float32), name
        )

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c0"], ["h0"]),
        helper.make_node("Conv", ["h0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], group=C),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "w2", "b2"], ["y"]),
    ]
    inits = [
        w("w0", (C, 3, 3, 3)),
        w("b0", (C,)),
        w("w1", (C, 1, 3, 3)),
        w("b1", (C,)),
        w("w2", (C, C, 1, 1)),
        w("b2", (C,)),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, 16, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_ncnn_int8_fuses_and_can_keep_depthwise_fp32(tmp_path, need_ncnn, monkeypatch):
    from onnx2trt_lib import _optional
    from onnx2trt_lib.ncnn import api as ncnn_api
    from onnx2trt_lib.ncnn import ncnn_int8
    from onnx2trt_lib.ncnn.table import read_table

    try:
        _optional.pnnx_binary()
    except Exception:
        pytest.skip("pnnx is not installed (pip install 'onnx2trt_lib[ncnn]')")
    _mobile_block_onnx(tmp_path / "block.onnx")
    x = np.random.default_rng(4).uniform(-1, 1, (16, 1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x.reshape(16, 3, 16, 16))
    monkeypatch.setattr(ncnn_api, "host_is_x86", lambda: False)  # the default on ARM
    full = ncnn_int8(
        tmp_path / "block.onnx", str(tmp_path / "calib.npy"), tmp_path / "a", protect=False
    )
    fp32 = read_param(full.param)
    assert not any(x.type == "HardSwish" for x in fp32.layers)  # fused into the convolutions
    terms = [(x.type, int(x.get(8))) for x in read_param(full.int8_param).layers if x.get(8)]
    # conv -> dw -> conv: the first two write INT8 for the next one
    assert terms == [("Convolution", 102), ("ConvolutionDepthWise", 101), ("Convolution", 2)]
    assert len(full.requantized) == 2 and len(full.quantized) == 3
    nodw = ncnn_int8(
        tmp_path / "block.onnx",
        str(tmp_path / "calib.npy"),
        tmp_path / "b",
        protect=False,
        depthwise=False,
    )
    int8 = read_param(nodw.int8_param)
    dw = [x for x in int8.layers if x.type == "ConvolutionDepthWise"]
    assert len(dw) == 1 and not dw[0].get(8)
    assert dw[0].name not in read_table(nodw.table).inputs
    assert len(nodw.quantized) == 2 and nodw.requantized == []  # nothing INT8 meets directly
    assert len(nodw.layers) == 3  # still mapped, only not quantized
    # on x86 the default keeps depthwise FP32 (ncnn's x86 INT8 depthwise is the slower one) and
    # the convolution on the 3-channel image (not faster in INT8 there)
    monkeypatch.setattr(ncnn_api, "host_is_x86", lambda: True)
    default = ncnn_int8(
        tmp_path / "block.onnx", str(tmp_path / "calib.npy"), tmp_path / "c", protect=False
    )
    assert default.quantized == nodw.quantized[1:]
    assert set(read_table(default.table).inputs) == set(nodw.quantized[1:])
    image = ncnn_int8(
        tmp_path / "block.onnx",
        str(tmp_path / "calib.npy"),
        tmp_path / "d",
        protect=False,
        image_conv=True,
    )
    assert image.quantized == nodw.quantized
    # and the image convolution (3 -> 16, 3x3 stride 1) runs without INT8 Winograd there
    first = read_param(image.int8_param).layer(image.quantized[0])
    assert first.get(31) == 64
    assert read_param(full.int8_param).layer(full.quantized[0]).get(31) == 0  # not on ARM


def _write(tmp_path, lines, seed=0):
    """A hand-made FP32 model: random weights and biases for every Convolution/InnerProduct."""
    rng = np.random.default_rng(seed)
    text = f"7767517\n{len(lines)} {len({t for ln in lines for t in _tops(ln)})}\n"
    (tmp_path / "h.param").write_text(text + "\n".join(lines) + "\n")
    param = read_param(tmp_path / "h.param")
    chunks = []
    for layer in param.layers:
        if layer.type in ("Convolution", "InnerProduct"):
            n, out = int(layer.get(6 if layer.type == "Convolution" else 2)), int(layer.get(0))
            w = rng.normal(0, 1 / np.sqrt(n / out), n).astype(np.float32)
            chunks += [struct.pack("<I", 0), w.tobytes(), rng.normal(0, 0.1, out).astype("<f4")]
    return param, b"".join(c if isinstance(c, bytes) else c.tobytes() for c in chunks)


def _tops(line):
    parts = line.split()
    nb, nt = int(parts[2]), int(parts[3])
    return parts[4 + nb : 4 + nb + nt]


RESIDUAL = [
    "Input in0 0 1 in0 0=9 1=7 2=16",
    _conv("c0", "in0", "a", 3, act=" 9=1"),
    "Split sp 1 3 a a0 a1 a2",
    _conv("c1", "a0", "b", 3),  # a + c1(a): folds
    "BinaryOp add 2 1 a1 b s 0=0",
    "ReLU r 1 1 s t",
    f"Convolution c2 1 1 t u 0={C} 1=3 3=2 4=1 5=1 6={C * C * 9}",  # stride 2: cannot fold
    "Pooling up 1 1 a2 v 0=1 1=2 2=2",  # a pooled to u's shape
    "BinaryOp add2 2 1 u v out0 0=0",
]


def test_residual_add_folded_into_the_convolution(tmp_path, need_ncnn):
    from onnx2trt_lib.ncnn.fuse import fold_residuals

    param, blob = _write(tmp_path, RESIDUAL)
    folded, fblob, names = fold_residuals(param, blob, walk_bin(param, blob))
    assert names == ["c1"]
    kinds = [x.name for x in folded.layers]
    assert "add" not in kinds and "add2" in kinds and "c2" in kinds
    assert folded.layer("sp").tops == ["a0", "a2"]  # the add's input is no longer made
    assert folded.layer("c1").tops == ["s"]
    fused, done = fuse_activations(folded)
    assert [(f.layer, f.into) for f in done] == [("c1", "r")]  # the ReLU after the add too
    w0 = read_floats(blob, walk_bin(param, blob)["c1"][0]).reshape(C, C, 3, 3)
    w1 = read_floats(fblob, walk_bin(fused, fblob)["c1"][0]).reshape(C, C, 3, 3)
    eye = np.zeros_like(w0)
    eye[np.arange(C), np.arange(C), 1, 1] = 1
    assert np.array_equal(w1, w0 + eye)
    xs = np.random.default_rng(5).normal(size=(4, 16, 7, 9)).astype(np.float32)
    ref_net = _net(tmp_path, "ref", param.text(), blob, int8=False)
    got_net = _net(tmp_path, "got", fused.text(), fblob, int8=False)
    for x in xs:
        ref, got = _out(ref_net, x), _out(got_net, x)
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize(
    "conv",
    [
        _conv("c1", "a0", "b", 3, act=" 9=1"),  # its own activation comes before the add
        f"Convolution c1 1 1 a0 b 0={C} 1=3 4=0 5=1 6={C * C * 9} 14=2 16=2",  # not `same`
        f"Convolution c1 1 1 a0 b 0={C} 1=3 2=2 4=1 5=1 6={C * C * 9}",  # dilation 2, pad 1
        f"Convolution c1 1 1 a0 b 0={C} 1=1 11=3 4=0 14=1 5=1 6={C * C * 3}",  # 1x3: folds
    ],
)
def test_residual_fold_only_where_the_shape_is_kept(tmp_path, conv):
    from onnx2trt_lib.ncnn.fuse import fold_residuals

    lines = [x if not x.startswith("Convolution c1 ") else conv for x in RESIDUAL]
    param, blob = _write(tmp_path, lines)
    _, _, names = fold_residuals(param, blob, walk_bin(param, blob))
    assert names == (["c1"] if "11=3" in conv else [])


HEAD = [
    "Input in0 0 1 in0 0=6 1=6 2=16",
    _conv("c0", "in0", "a", 3, act=" 9=1"),
]


@pytest.mark.parametrize("flatten", [True, False])
def test_convolution_requantizes_into_an_innerproduct(tmp_path, need_ncnn, flatten):
    """An INT8 InnerProduct reads the convolution's int8 output (through a Flatten or not)."""
    tail = (
        ["Flatten fl 1 1 a f", f"InnerProduct fc 1 1 f out0 0=10 1=1 2={10 * C * 36}"]
        if flatten
        else [f"InnerProduct fc 1 1 a out0 0=10 1=1 2={10 * C * 36}"]
    )
    param, blob = _write(tmp_path, HEAD + tail)
    segs = walk_bin(param, blob)
    layers = [x for x in param.layers if x.type in ("Convolution", "InnerProduct")]
    weights = {x.name: weight_scales(x, read_floats(blob, segs[x.name][0])) for x in layers}
    table = NcnnTable(weights, {"c0": 127 / 4.0, "fc": 127 / 6.0})
    assert requantize_targets(param, table.inputs) == {"c0": np.float32(127 / 6.0)}
    plain_text, plain_bin, _ = write_int8(param, blob, segs, table, requantize=False)
    rq_text, rq_bin, _ = write_int8(param, blob, segs, table)
    (tmp_path / "rq.param").write_text(rq_text)
    assert read_param(tmp_path / "rq.param").layer("c0").get(8) == 102
    plain = _net(tmp_path, "plain", plain_text, plain_bin, int8=True)
    fast = _net(tmp_path, "rq", rq_text, rq_bin, int8=True)
    xs = np.random.default_rng(6).normal(size=(8, 16, 6, 6)).astype(np.float32)
    for x in xs:
        a, b = _out(plain, x), _out(fast, x)
        # the same int8 codes up to rounding ties (see the requantize test above)
        assert np.abs(a - b).max() <= 0.02 * np.abs(a).max()
    # an InnerProduct behind a Split or kept FP32 is not a requantize target
    assert requantize_targets(param, {"c0": 127 / 4.0}) == {}


def test_narrow_winograd_masked_on_x86(tmp_path, need_ncnn):
    from onnx2trt_lib.ncnn.int8 import narrow_winograd

    lines = [
        "Input in0 0 1 in0 0=8 1=8 2=16",
        _conv("c0", "in0", "a", 3),  # 16 -> 16, 3x3 s1: Winograd in ncnn's INT8 path
        f"Convolution c1 1 1 a b 0=32 1=3 4=1 5=1 6={C * 32 * 9}",  # 16 -> 32: masked too
        f"Convolution c2 1 1 b c 0=32 1=3 4=1 5=1 6={32 * 32 * 9}",  # 32 inputs: kept
        f"Convolution c3 1 1 c d 0=32 1=3 3=2 4=1 5=1 6={32 * 32 * 9}",  # stride 2: no Winograd
        f"Convolution c4 1 1 d out0 0=8 1=1 5=1 6={32 * 8}",  # 1x1
    ]
    param, blob = _write(tmp_path, lines)
    assert [x.name for x in param.layers if narrow_winograd(x)] == ["c0", "c1"]
    segs = walk_bin(param, blob)
    convs = [x for x in param.layers if x.type == "Convolution"]
    table = NcnnTable(
        {x.name: weight_scales(x, read_floats(blob, segs[x.name][0])) for x in convs},
        {x.name: 127 / 4.0 for x in convs},
    )
    plain_text, plain_bin, _ = write_int8(param, blob, segs, table)
    text, mbin, _ = write_int8(param, blob, segs, table, narrow_winograd_off=True)
    assert mbin == plain_bin  # only the .param changes
    (tmp_path / "m.param").write_text(text)
    masks = {x.name: int(x.get(31)) for x in read_param(tmp_path / "m.param").layers}
    assert masks == {"in0": 0, "c0": 64, "c1": 64, "c2": 0, "c3": 0, "c4": 0}
    # im2col + int8 GEMM computes what Winograd computes (6-bit weights: both exact in int32)
    a_net = _net(tmp_path, "wino", plain_text, plain_bin, int8=True)
    b_net = _net(tmp_path, "gemm", text, mbin, int8=True)
    for x in np.random.default_rng(7).normal(size=(4, 16, 8, 8)).astype(np.float32):
        a, b = _out(a_net, x), _out(b_net, x)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    c=st.integers(1, 12),
    kw=st.sampled_from([1, 3, 5]),
    kh=st.sampled_from([1, 3, 5]),
    dw=st.integers(1, 2),
    dh=st.integers(1, 2),
    h=st.integers(5, 9),
    w=st.integers(5, 9),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_residual_fold_computes_the_same_in_ncnn(
    tmp_path, need_ncnn, c, kw, kh, dw, dh, h, w, bias, seed
):
    """Any shape-keeping convolution (kernel, dilation, channels, bias or not): the folded model
    gives the unfolded one's outputs to float rounding in ncnn FP32."""
    from onnx2trt_lib.ncnn.fuse import fold_residuals

    pw, ph = dw * (kw - 1) // 2, dh * (kh - 1) // 2
    conv = (
        f"Convolution c1 1 1 a0 b 0={c} 1={kw} 11={kh} 2={dw} 12={dh} 4={pw} 15={pw} "
        f"14={ph} 16={ph} 5={int(bias)} 6={c * c * kw * kh}"
    )
    lines = [
        f"Input in0 0 1 in0 0={w} 1={h} 2={c}",
        "Split sp 1 2 in0 a0 a1",
        conv,
        "BinaryOp add 2 1 b a1 out0 0=0",  # conv output first: the other operand order
    ]
    text = f"7767517\n{len(lines)} 5\n" + "\n".join(lines) + "\n"
    (tmp_path / "r.param").write_text(text)
    param = read_param(tmp_path / "r.param")
    rng = np.random.default_rng(seed)
    n = c * c * kw * kh
    blob = struct.pack("<I", 0) + rng.normal(0, 1 / np.sqrt(n / c), n).astype("<f4").tobytes()
    if bias:
        blob += rng.normal(0, 0.1, c).astype("<f4").tobytes()
    folded, fblob, names = fold_residuals(param, blob, walk_bin(param, blob))
    assert names == ["c1"] and [x.type for x in folded.layers] == ["Input", "Convolution"]
    assert folded.layer("c1").bottoms == ["in0"] and folded.blob_count == 2
    x = rng.normal(size=(c, h, w)).astype(np.float32)
    ref = _out(_net(tmp_path, "ref", param.text(), blob, int8=False), x)
    got = _out(_net(tmp_path, "got", folded.text(), fblob, int8=False), x)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()

"""Running ncnn models from Python (the `ncnn` wheel): FP32 reference runs and INT8 runs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .. import _optional


def load_net(
    param: str | os.PathLike, bin_path: str | os.PathLike, *, int8: bool = False, threads: int = 1
):
    """An ncnn.Net on CPU: FP32 storage and arithmetic (no fp16/bf16, no packing) unless `int8`,
    which turns on ncnn's INT8 inference and its usual packing."""
    ncnn = _optional.ncnn()
    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute = False
    opt.num_threads = threads
    opt.use_fp16_packed = False
    opt.use_fp16_storage = False
    opt.use_fp16_arithmetic = False
    opt.use_bf16_storage = False
    opt.use_int8_inference = bool(int8)
    if not int8:
        opt.use_packing_layout = False
    if net.load_param(str(param)) != 0 or net.load_model(str(bin_path)) != 0:
        raise RuntimeError(f"ncnn could not load {param}")
    return net


def run(net, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """Extract `outputs` for one sample (`inputs`: ncnn blob -> array without the batch axis)."""
    ncnn = _optional.ncnn()
    with net.create_extractor() as ex:
        # light mode (ncnn's default) frees each blob once its consumers ran; with several
        # blobs to extract, keep them so the later ones are not computed again
        ex.set_light_mode(len(outputs) == 1)
        # ncnn.Mat(array) points into the array's memory (no copy): keep every array alive
        # until the extraction is done
        held = [np.ascontiguousarray(arr, dtype=np.float32) for arr in inputs.values()]
        for name, arr in zip(inputs, held, strict=True):
            ex.input(name, ncnn.Mat(arr))
        result = {}
        for name in outputs:
            ret, mat = ex.extract(name)
            if ret != 0:
                raise RuntimeError(f"ncnn could not compute blob {name!r} (error {ret})")
            result[name] = np.array(mat, dtype=np.float32, copy=True)
        del held
    return result

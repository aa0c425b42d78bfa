"""ONNX to ncnn INT8 from our calibration: pnnx conversion, ncnn2table's table, ncnn2int8's model."""

from .api import NcnnResult, ncnn_int8

__all__ = ["NcnnResult", "ncnn_int8"]

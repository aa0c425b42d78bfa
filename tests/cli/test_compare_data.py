"""`onnx2trt compare --data`: compare on a calibration data source (images + preprocessing, .npy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import onnx2trt_lib
from onnx2trt_lib.calib.collect import model_feeds
from onnx2trt_lib.calib.preprocess import load_preprocess
from onnx2trt_lib.cli import main as cli_main
from onnx2trt_lib.errors import CalibrationError

SAMPLE = Path(onnx2trt_lib.__file__).parent / "data" / "sample"


def invoke(*args):
    return CliRunner().invoke(cli_main.cli, [str(a) for a in args], obj={})


def test_feeds_are_the_preprocessed_images_batched_like_calibrate():
    feeds = model_feeds(
        SAMPLE / "digits.onnx",
        SAMPLE / "calib_list.txt",
        preprocess=SAMPLE / "preprocess.json",
        batch_size=16,
    )
    assert len(feeds) == 4 and all(
        f["image"].shape == (16, 1, 8, 8) and f["image"].dtype == np.float32 for f in feeds
    )
    # independently: Pillow decode -> grey -> 8x8 -> /255, the order of the list
    from PIL import Image

    first = (SAMPLE / "calib_list.txt").read_text().split()[0]
    pre = load_preprocess(SAMPLE / "preprocess.json")
    expected = pre.apply(Image.open(SAMPLE / first))
    np.testing.assert_array_equal(feeds[0]["image"][0], expected)
    assert 0.0 <= feeds[0]["image"].min() and feeds[0]["image"].max() <= 1.0
    assert (
        len(
            model_feeds(
                SAMPLE / "digits.onnx",
                SAMPLE / "calib_list.txt",
                preprocess=SAMPLE / "preprocess.json",
                batch_size=16,
                max_batches=2,
            )
        )
        == 2
    )


def test_compare_on_images_runs_every_batch_and_finds_the_fp16_difference(tmp_path):
    fp16 = tmp_path / "digits.fp16.onnx"
    # float16 inputs and outputs: both sides must see the same float16-rounded images
    assert invoke("fp16", SAMPLE / "digits.onnx", "-o", fp16, "--fp16-io").exit_code == 0
    args = [
        "--data",
        SAMPLE / "calib_list.txt",
        "--preprocess",
        SAMPLE / "preprocess.json",
        "--batch-size",
        "8",
        "--json",
    ]
    same = invoke(
        "compare",
        SAMPLE / "digits.onnx",
        SAMPLE / "digits.onnx",
        *args,
        "--atol",
        "0",
        "--rtol",
        "0",
    )
    assert same.exit_code == 0, same.output
    report = json.loads(same.output)
    assert report["passed"] and report["feeds"] == 8
    near = invoke("compare", fp16, SAMPLE / "digits.onnx", *args, "--atol", "0", "--rtol", "0")
    assert near.exit_code == 3  # float16 rounding is a difference at zero tolerance
    near_report = json.loads(near.output)
    # the reported max error is the one ORT gives on the same preprocessed images
    feeds = model_feeds(
        SAMPLE / "digits.onnx",
        SAMPLE / "calib_list.txt",
        preprocess=SAMPLE / "preprocess.json",
        batch_size=8,
    )
    a = ort.InferenceSession(str(fp16), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(SAMPLE / "digits.onnx"), providers=["CPUExecutionProvider"])
    # both models get the same images rounded to float16 (the FP16 model has float16 I/O)
    rounded = [{"image": f["image"].astype(np.float16)} for f in feeds]
    worst = max(
        float(
            np.abs(
                a.run(None, r)[0].astype(np.float64)
                - b.run(None, {"image": r["image"].astype(np.float32)})[0]
            ).max()
        )
        for r in rounded
    )
    assert 0 < worst < 0.05
    assert near_report["outputs"][0]["max_abs"] == pytest.approx(worst, rel=1e-6)


def test_compare_data_errors_are_one_line(tmp_path):
    missing = invoke(
        "compare", SAMPLE / "digits.onnx", SAMPLE / "digits.onnx", "--data", tmp_path / "nope.txt"
    )
    assert (
        missing.exit_code != 0
        and "nope.txt" in missing.output
        and "Traceback" not in missing.output
    )
    both = invoke(
        "compare",
        SAMPLE / "digits.onnx",
        SAMPLE / "digits.onnx",
        "--data",
        SAMPLE / "calib_list.txt",
        "--input",
        SAMPLE / "digits_test.npz",
    )
    assert both.exit_code != 0 and "not both" in both.output
    with pytest.raises(CalibrationError, match="0 samples"):
        model_feeds(SAMPLE / "digits.onnx", np.zeros((0, 1, 8, 8), np.float32))


def test_quantize_protects_on_images_with_a_preprocessing(tmp_path):
    cache, out = tmp_path / "digits.cache", tmp_path / "digits.qdq.onnx"
    made = invoke(
        "calibrate",
        SAMPLE / "digits.onnx",
        "--data",
        SAMPLE / "calib_list.txt",
        "--preprocess",
        SAMPLE / "preprocess.json",
        "-o",
        cache,
        "--scope",
        "qdq",
        "--quiet",
    )
    assert made.exit_code == 0, made.output
    result = invoke(
        "quantize",
        SAMPLE / "digits.onnx",
        "--cache",
        cache,
        "-o",
        out,
        "--data",
        SAMPLE / "calib_list.txt",
        "--preprocess",
        SAMPLE / "preprocess.json",
        "--batch-size",
        "16",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["protection"]
    assert (
        report is not None and report["evaluations"] >= 1
    )  # protection ran on the preprocessed images
    assert report["met"] and report["after"] >= report["target"]
    assert out.is_file()

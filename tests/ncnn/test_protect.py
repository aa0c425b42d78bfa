"""The ncnn protection search (`api._protect`) on a simulated model: each layer in INT8 adds a
known output noise and a known loss of arg-max agreement, and both add up (what the search
assumes). Plain Python, no ncnn."""

from __future__ import annotations

import numpy as np
import pytest

from onnx2trt_lib.ncnn.api import _harm, _protect

SIGNAL = 1.0


class FakeModel:
    """Layer -> (noise power, lost agreement) when that layer is INT8."""

    def __init__(self, effects: dict[str, tuple[float, float]]) -> None:
        self.effects = effects
        self.calls = 0

    def int8_model(self, kept):
        return tuple(sorted(kept)), b"", [n for n in self.effects if n not in kept]

    def score(self, text, data):
        self.calls += 1
        int8 = [n for n in self.effects if n not in text]
        noise = sum(self.effects[n][0] for n in int8)
        loss = sum(self.effects[n][1] for n in int8)
        sqnr = np.inf if noise == 0 else 10 * np.log10(SIGNAL / noise)
        return float(sqnr), 1.0 - loss


def _db(db: float) -> float:
    return SIGNAL * 10 ** (-db / 10)


def test_harm_takes_the_bound_a_layer_hurts_more():
    target = (20.0, 0.99)
    assert _harm((30.0, 1.0), target) == pytest.approx(0.1)  # noise 10 dB under the bound
    assert _harm((60.0, 0.98), target) == pytest.approx(2.0)  # twice the allowed label loss
    # a layer that flips labels outranks one that only adds noise where no label changes
    assert _harm((40.0, 0.985), target) > _harm((24.0, 1.0), target)


def test_protect_keeps_the_label_flipping_layer_and_gives_the_rest_back():
    effects = {
        "noisy": (_db(24.0), 0.0),  # SQNR worst alone, labels intact
        "flips": (_db(45.0), 0.02),  # good SQNR, breaks 2% of the labels
        "small1": (_db(40.0), 0.001),
        "small2": (_db(40.0), 0.001),
    }
    fake = FakeModel(effects)
    kept, (sqnr, agreement) = _protect(fake, fake.int8_model, list(effects), (20.0, 0.99))
    assert kept == ["flips"]
    assert sqnr >= 20.0 and agreement >= 0.99
    # alone-scores (4), all INT8, with the first-ranked layer kept, one give-back trial
    assert fake.calls <= len(effects) + 3


def test_protect_adds_layers_until_the_bounds_hold():
    # ten layers of 25 dB each: the noise adds up to 15 dB, the bound is 20 dB, so at least
    # 7 must stay FP32 (3 x 25 dB = 20.2 dB)
    effects = {f"l{i}": (_db(25.0), 0.0) for i in range(10)}
    fake = FakeModel(effects)
    kept, (sqnr, _) = _protect(fake, fake.int8_model, list(effects), (20.0, 0.99))
    assert len(kept) == 7 and sqnr >= 20.0


def test_default_bounds_are_the_qdq_protections():
    import inspect

    from onnx2trt_lib.cli.ncnn_cmd import command
    from onnx2trt_lib.ncnn import ncnn_int8
    from onnx2trt_lib.quant.agreement import DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_SQNR_DB

    params = inspect.signature(ncnn_int8).parameters
    assert params["min_sqnr"].default == DEFAULT_MIN_SQNR_DB
    assert params["min_agreement"].default == DEFAULT_MIN_AGREEMENT
    cli = {p.name: p.default for p in command.params}
    assert cli["min_sqnr"] == DEFAULT_MIN_SQNR_DB and cli["min_agreement"] == DEFAULT_MIN_AGREEMENT

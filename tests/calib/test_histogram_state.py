"""Histogram state: counts vs numpy, range growth, exact merging, views, edge cases, persistence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnx2trt_lib.calib import Histogram, abs_max, reference
from onnx2trt_lib.calib import histogram as calib_hist_mod
from onnx2trt_lib.errors import CalibrationError, UsageError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([np.float16, np.float32, np.float64])


@st.composite
def arrays(draw, min_size: int = 1, max_size: int = 3000):
    dtype = draw(DTYPES)
    size = draw(st.integers(min_size, max_size))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "relu", "outliers", "edges", "special"]))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    x = rng.standard_normal(size) * scale
    if kind == "relu":
        x = np.maximum(x, 0)
    elif kind == "outliers":
        x[rng.integers(0, size, 3)] = scale * 1e3 * rng.standard_normal(3)
    elif kind == "edges":  # values exactly on bin edges of the final range
        x = np.round(x * 8) / 8
    elif kind == "special":
        x[rng.random(size) < 0.1] = np.nan
        x[rng.random(size) < 0.05] = np.inf
        x[rng.random(size) < 0.05] = -np.inf
    with np.errstate(over="ignore"):
        return x.astype(dtype)  # float16 overflow gives +-inf: fine, counted as non-finite


def _finite_abs(x: np.ndarray) -> np.ndarray:
    a = np.abs(np.asarray(x, dtype=np.float64)).ravel()
    return a[np.isfinite(a)]


def assert_counts_equal_reference(h: Histogram, data: list[np.ndarray]) -> None:
    allv = (
        np.concatenate([np.asarray(d, dtype=np.float64).ravel() for d in data])
        if data
        else np.zeros(0)
    )
    ref = reference.histogram(allv, h.bin_width, h.num_bins) if h.bin_width > 0 else None
    finite = _finite_abs(allv)
    if ref is not None:
        np.testing.assert_array_equal(h.counts, ref)
    else:
        assert h.counts[0] == finite.size and h.counts[1:].sum() == 0
    assert h.count == finite.size == int(h.counts.sum())
    assert h.nonfinite == allv.size - finite.size
    assert h.amax_seen == (finite.max() if finite.size else 0.0)
    assert h.has_negatives == bool(np.any(allv[np.isfinite(allv)] < 0))


@FAST
@given(arrays(), st.sampled_from([1, 7, 128, 2048]))
def test_single_batch_equals_reference(x, num_bins):
    h = Histogram(num_bins)
    h.update(x)
    assert h.range_max == abs_max(x)
    assert_counts_equal_reference(h, [x])


@FAST
@given(arrays(min_size=50))
def test_counts_equal_np_histogram_away_from_edges(x):
    a = _finite_abs(x)
    if a.size == 0 or a.max() == 0:
        return
    r = float(a.max())
    h = Histogram(256, range_max=r)
    h.update(x)
    np_counts = np.histogram(a, bins=256, range=(0, r))[0]
    # documented rounding: only values within 1e-6 bins of an inner edge may land differently
    pos = a * (256 / r)
    near = (np.abs(pos - np.round(pos)) < 1e-6) & (np.round(pos) > 0) & (np.round(pos) < 256)
    assert np.abs(h.counts - np_counts).sum() <= 2 * near.sum()
    if not near.any():
        np.testing.assert_array_equal(h.counts, np_counts)


def test_counts_equal_np_histogram_on_random_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(100_000).astype(np.float32)
    a = np.abs(x.astype(np.float64))
    h = Histogram(2048, range_max=float(a.max()))
    h.update(x)
    np.testing.assert_array_equal(
        h.counts, np.histogram(a, bins=2048, range=(0, float(a.max())))[0]
    )


@FAST
@given(st.lists(arrays(max_size=500), min_size=1, max_size=6), st.sampled_from([16, 129, 2048]))
def test_growing_range_equals_one_histogram_at_the_final_width(batches, num_bins):
    """Single-pass mode: pair-merging when a batch exceeds the range is exact."""
    h = Histogram(num_bins)
    for b in batches:
        h.update(b)
    assert_counts_equal_reference(h, batches)
    if h.range_max > 0:
        fixed = Histogram(num_bins, range_max=h.range_max)
        for b in batches:
            fixed.update(b)
        np.testing.assert_array_equal(fixed.counts, h.counts)
        assert fixed.top == h.top


def test_growth_moves_top_edge_values_exactly():
    h = Histogram(8)
    h.update(np.array([1.0, 1.0, 0.9]))  # 1.0 is the top edge: bin 7, counted as top
    assert h.top == 2 and h.counts[7] == 3
    h.update(np.array([1.5]))  # range doubles to 2: 1.0 -> bin 4, 0.9 -> bin 3, 1.5 -> bin 6
    assert h.range_max == 2.0
    assert h.counts.tolist() == [0, 0, 0, 1, 2, 0, 1, 0]
    h.update(np.array([7.9]))  # 2 -> 4 -> 8
    assert h.range_max == 8.0 and h.counts.tolist() == [
        1,
        3,
        0,
        0,
        0,
        0,
        0,
        1,
    ]  # 0.9 | 1, 1, 1.5 | 7.9


def test_fixed_range_grows_with_a_warning(caplog):
    h = Histogram(64, range_max=1.0)
    with caplog.at_level("WARNING"):
        h.update(np.array([0.5, 3.0]))
    assert h.range_max == 4.0 and "grew" in caplog.text
    assert_counts_equal_reference(h, [np.array([0.5, 3.0])])


@FAST
@given(
    st.lists(arrays(max_size=400), min_size=2, max_size=5),
    st.integers(0, 3),
    st.booleans(),
    st.integers(-3, 3),
)
def test_merge_equals_histogram_of_the_concatenation(batches, split_at, fixed, power):
    split_at = min(max(split_at, 1), len(batches) - 1)
    first, second = list(batches[:split_at]), list(batches[split_at:])
    r = max(float(abs_max(b)) for b in batches)
    make = (lambda: Histogram(128, range_max=r)) if fixed else (lambda: Histogram(128))
    a = make()
    for x in first:
        a.update(x)
    if not fixed and a.range_max > 0:
        # growing mode: give the second state a first batch whose range is a's * 2**power, so the
        # two widths are a power of two apart (as with states started from the same data)
        second.insert(0, np.array([a.range_max * 2.0**power]))
    b = make()
    for x in second:
        b.update(x)
    everything = first + second
    merged = a.merge(b)
    assert_counts_equal_reference(merged, everything)
    at_width = Histogram(128, range_max=merged.range_max)
    for x in everything:
        at_width.update(x)
    np.testing.assert_array_equal(merged.counts, at_width.counts)
    assert merged.top == at_width.top
    if fixed and r > 0:
        assert merged.range_max == r


def test_merge_reconciles_power_of_two_widths():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(5000)
    y = 4 * rng.permutation(x)  # exactly 4x the range of x: widths differ by 4
    a, b = Histogram(256), Histogram(256)
    a.update(x)
    b.update(y)
    ab, ba = a.merge(b), b.merge(a)
    assert ab == ba and ab.range_max == b.range_max
    assert_counts_equal_reference(ab, [x, y])
    assert a.range_max == np.abs(x).max()  # inputs untouched


def test_merge_refuses_incompatible_states():
    a, b = Histogram(64), Histogram(64)
    a.update(np.array([1.0]))
    b.update(np.array([3.0]))
    with pytest.raises(CalibrationError, match="power of two"):
        a.merge(b)
    with pytest.raises(CalibrationError, match="bins"):
        a.merge(Histogram(32))
    empty = Histogram(64)
    assert (
        a.merge(empty) == a.merge(Histogram(64))
        and a.merge(empty).counts.tolist() == a.counts.tolist()
    )


def test_views_and_shapes_give_the_same_counts():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((64, 5000)).astype(np.float32)
    half = base.astype(np.float16)
    views = [
        base.T,
        base[:, ::3],
        base[::2, 7:],
        base[5],
        base[:, 11],
        base[::-1, ::-2],
        base.reshape(8, 8, 5000)[:, ::3, ::2],
        half[:, ::3],
        half[::2, 7:].T,
        half[:, 11],
    ]
    for v in views:
        h = Histogram(512, range_max=4.0)
        h.update(v)
        ref = Histogram(512, range_max=4.0)
        ref.update(np.ascontiguousarray(v).ravel())
        assert h == ref, v.shape
        assert_counts_equal_reference(h, [v])


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_threaded_accumulation_is_exact(monkeypatch, threads):
    monkeypatch.setenv("ONNX2TRT_CALIB_THREADS", threads)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(calib_hist_mod._PARALLEL_MIN + 12345).astype(np.float32)
    x[::100_001] = np.nan
    h = Histogram(2048)
    h.update(x[: x.size // 3])
    h.update(x * 3)  # forces growth inside the threaded path
    assert_counts_equal_reference(h, [x[: x.size // 3], x * 3])


def test_edge_cases_have_defined_finite_results():
    def amaxes(x):
        h = Histogram()
        h.update(np.asarray(x))
        return h, {m: h.compute_amax(m) for m in ("entropy", "max", "percentile", "mse")}

    h, r = amaxes(np.zeros((3, 4)))
    assert r == dict.fromkeys(r, 1.0) and h.count == 12 and h.range_max == 0
    h, r = amaxes(np.full(1000, -2.5, np.float32))  # constant
    assert (
        r["max"] == 2.5
        and r["entropy"] == pytest.approx(2.5 * 2048.5 / 2048)
        and r["percentile"] == 2.5
    )
    h, r = amaxes(np.array([3.0]))  # one element
    assert r["max"] == 3.0 and all(0 < v < 3.01 for v in r.values())
    h, r = amaxes(np.array([np.nan, 1.0, np.inf, -np.inf, -0.5]))
    assert h.nonfinite == 3 and h.count == 2 and r["max"] == 1.0
    x = np.random.default_rng(6).standard_normal(100_000)
    x[:3] = [1e6, -1e7, 3e6]  # huge outliers
    h, r = amaxes(x)
    # the Gaussian body is all in bin 0 (w = 1e7/2048): only candidates whose last bin holds an
    # outlier are finite, and the KL minimum is the whole range
    assert (
        r["max"] == 1e7
        and r["entropy"] == pytest.approx(1e7 * 2048.5 / 2048)
        and r["percentile"] < 1e5
    )
    for v in r.values():
        assert np.isfinite(v) and v > 0


def test_histograms_with_fewer_bins_than_levels():
    h = Histogram(100)
    h.update(np.random.default_rng(7).standard_normal(1000))
    assert h.compute_amax("entropy") == pytest.approx(100.5 * h.bin_width)


def test_no_finite_data_is_an_error():
    h = Histogram()
    with pytest.raises(CalibrationError, match="no data"):
        h.compute_amax()
    h.update(np.array([np.nan, np.inf]))
    with pytest.raises(CalibrationError, match="NaN/Inf"):
        h.compute_amax()
    h.update(np.zeros(0))
    assert h.count == 0 and h.nonfinite == 2


def test_bad_arguments():
    with pytest.raises(UsageError):
        Histogram(0)
    for bad in (float("nan"), float("inf"), -1.0):  # a range is finite and >= 0
        with pytest.raises(UsageError, match="range_max"):
            Histogram(range_max=bad)
    with pytest.raises(CalibrationError, match="dtype"):
        Histogram().update(np.array([1j]))
    h = Histogram()
    h.update(np.array([-1.0, 2.0]))
    with pytest.raises(UsageError, match="unknown calibration method"):
        h.compute_amax("kl")
    for method in ("max", "entropy", "percentile", "mse"):  # a misspelt option is never ignored
        with pytest.raises(UsageError, match="option"):
            h.compute_amax(method, num_bins=3)
    with pytest.raises(CalibrationError, match="negative"):
        h.compute_amax("entropy", unsigned=True)


def test_other_dtypes_and_byte_orders():
    x = np.array([0.25, -3.0, 1.5, np.nan])
    ref = Histogram(16)
    ref.update(x)
    for variant in (x.astype(">f8"), x.astype(">f4"), x.astype(np.longdouble), x.astype(">f2")):
        h = Histogram(16)
        h.update(variant)
        assert h == ref, variant.dtype
    empty2d = np.zeros((0, 5))[:, ::2]
    h = Histogram(16)
    h.update(empty2d)
    assert h.count == 0


def test_integer_input_and_input_untouched():
    x = np.arange(-50, 50, dtype=np.int32)
    before = x.copy()
    h = Histogram(64)
    h.update(x)
    assert np.array_equal(x, before)
    assert_counts_equal_reference(h, [x])


@FAST
@given(st.lists(arrays(max_size=300), min_size=0, max_size=3), st.booleans())
def test_state_dict_round_trips_exactly_through_json(batches, fixed):
    h = Histogram(300, range_max=7.25 if fixed else None)
    for b in batches:
        h.update(b)
    state = json.loads(json.dumps(h.state_dict()))
    back = Histogram.from_state(state)
    assert back == h and back.bin_width == h.bin_width and back.counts.dtype == np.int64
    state["counts"] = np.asarray(state["counts"])  # arrays accepted too
    assert Histogram.from_state(state) == h
    more = np.array([3.5, -100.0])
    back.update(more)
    h.update(more)
    assert back == h


def test_bad_states_are_refused():
    good = Histogram(8)
    good.update(np.arange(8.0))
    for change in ({"counts": [1] * 7}, {"count": 99}, {"format": "x"}, {"range_max": "a"}):
        state = {**good.state_dict(), **change}
        with pytest.raises(CalibrationError):
            Histogram.from_state(state)


@FAST
@given(
    hnp.arrays(
        st.sampled_from([np.float16, np.float32, np.float64]),
        st.integers(0, 500),
        # NaN/inf as plain values: hypothesis' own NaNs carry payloads that it filters out when
        # they do not survive the cast to the array's dtype (a flaky filter_too_much health check)
        elements=st.one_of(
            st.floats(allow_nan=False, allow_infinity=False, width=16),
            st.sampled_from([np.nan, np.inf, -np.inf]),
        ),
    )
)
def test_abs_max_ignores_nonfinite(x):
    a = _finite_abs(x)
    assert abs_max(x) == (a.max() if a.size else 0.0)
    assert abs_max(x[::2]) == (_finite_abs(x[::2]).max() if _finite_abs(x[::2]).size else 0.0)


def test_range_that_cannot_grow_further_is_an_error():
    h = Histogram(16)
    h.update(np.array([1e-300]))
    h.update(np.array([1e300]))  # 2**1993 times the range: still representable
    assert h.range_max >= 1e300
    with pytest.raises(CalibrationError, match="overflow"):
        h.update(np.array([1.7e308]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_blocked_kernel_with_nonfinite_and_overflow_blocks(dtype, seed):
    """The fast kernel works in 1024-element blocks and redoes a block holding NaN/Inf or a value
    beyond the range; mixing such blocks with clean ones must still give the reference counts."""
    rng = np.random.default_rng(seed)
    first = rng.standard_normal(5000).astype(dtype)
    second = (rng.standard_normal(9000) * 3).astype(
        dtype
    )  # exceeds the first batch's range: growth
    for k in rng.choice(9, size=4, replace=False):
        block = second[k * 1024 : (k + 1) * 1024]
        block[rng.integers(0, block.size)] = rng.choice([np.nan, np.inf, -np.inf])
    second[-3:] = [
        -0.0,
        np.finfo(dtype).tiny / 2,
        -first.max(),
    ]  # -0.0, a subnormal, the old top edge
    h = Histogram(2048)
    h.update(first)
    h.update(second[::1])
    h.update(second.reshape(90, 100).T)  # a strided view of the same data
    assert_counts_equal_reference(h, [first, second, second.reshape(90, 100).T])


def test_growth_stops_at_the_first_range_that_covers_the_data():
    """A value exactly on a doubled edge needs no further doubling (R grows while R < max)."""
    h = Histogram(8)
    h.update(np.array([1.0]))
    h.update(np.array([2.0]))  # exactly 2R: one doubling, 2.0 is the new top edge
    assert h.range_max == 2.0 and h.top == 1 and h.counts.tolist() == [0, 0, 0, 0, 1, 0, 0, 1]
    h.update(np.array([8.0]))  # exactly 4R: two doublings, not three
    assert h.range_max == 8.0 and h.counts.tolist() == [0, 1, 1, 0, 0, 0, 0, 1]


@FAST
@given(st.lists(arrays(max_size=200), min_size=1, max_size=5))
def test_grown_range_is_the_smallest_power_of_two_that_covers(batches):
    """R = R0 * 2^k with the least k such that R >= max |x|: a larger R halves the resolution."""
    h = Histogram(64)
    first = None
    for b in batches:
        h.update(b)
        if first is None and h.range_max > 0:
            first = h.range_max
    if first is None:
        return
    k = math.log2(h.range_max / first)
    assert k == int(k)
    assert h.range_max >= h.amax_seen
    assert k == 0 or h.range_max / 2 < h.amax_seen


@FAST
@given(
    st.integers(-140, 127),
    st.sampled_from([1, 2, 64, 2048, 2000, 1000, 3]),
    st.integers(0, 2**32 - 1),
)
def test_float32_products_give_the_reference_bins(exponent, num_bins, seed):
    """Float32 data over a power-of-two range is binned with a float32 product when inv_w is a
    power of two that float32 holds (histogram._kernel_scale, exact mode's common case); the bins
    must be the float64 rule's, also at bin edges, their float32 neighbours, subnormals and ranges
    whose inv_w float32 cannot hold (the float64 product then)."""
    rng = np.random.default_rng(seed)
    top = 2.0**exponent
    width = top / num_bins
    k = rng.integers(0, num_bins + 1, 300).astype(np.float64)
    edges = (k * width).astype(np.float32)  # bin edges (rounded to float32 where they must be)
    edges = edges[np.isfinite(edges) & (edges <= top)]
    up = np.nextafter(edges, np.float32(np.inf))
    down = np.nextafter(edges, np.float32(0))
    spread = (rng.random(2000) * top).astype(np.float32)
    tiny = np.array([0.0, np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).tiny])
    x = np.concatenate([edges, up[up <= top], down, spread, tiny.astype(np.float32)])
    x = x[np.abs(x.astype(np.float64)) <= top]
    x = np.where(rng.random(x.size) < 0.5, -x, x).astype(np.float32)
    if seed % 2:  # a NaN and an Inf: their blocks are redone by the plain kernel, same product
        x = np.concatenate([x, np.array([np.nan, -np.inf], dtype=np.float32)])
    x = x[rng.permutation(x.size)]
    h = Histogram(num_bins, range_max=top)
    h.update(x, threads=1)
    assert_counts_equal_reference(h, [x])
    scale = calib_hist_mod._kernel_scale(h._inv_width(), np.dtype(np.float32))
    pow2_f32 = math.frexp(1.0 / width)[0] == 0.5 and 2.0**-126 <= 1.0 / width <= 2.0**127
    assert isinstance(scale, np.float32) == pow2_f32  # the float32 path runs where it may

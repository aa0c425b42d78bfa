"""Per-tensor histogram state of |x|: exact accumulation, range growth by pair-merging, merging.

Bins: N bins of width w = R / N over [0, R]; a finite value goes to bin floor(|x| * (1/w))
(float64), the top edge (|x| = R) into bin N-1, like np.histogram's closed last bin.
Against np.histogram(|x|, bins=N, range=(0, R)) this can differ only for values within an
ulp or so of an inner edge (numpy compares with its own linspace edges); see the tests.

Two ways to set R:
* exact, two passes: `Histogram(range_max=abs_max over all data)`, then update with every batch;
* single pass (streams that cannot be re-read): `Histogram()`; the first batch with a non-zero
  value fixes R = its max |x|. A later batch that goes beyond R doubles R (and w) as often as
  needed by adding adjacent bin pairs. Because 1/(2w) = (1/w)/2 exactly in floating point,
  floor(|x|/(2w)) = floor(floor(|x|/w)/2) and the merged counts are exactly what binning all
  the data at the final width would give. The only values that move differently are those
  clipped from the top edge into bin N-1; `top` counts them so the merge puts them right.
  A fixed range_max that later data exceeds grows the same way (with a warning).

Merging states (processes, machines): widths must differ by a power of two (always true for
histograms that started from the same range_max or the same first batch); the finer one is
pair-merged up to the coarser width, then counts add. Other width ratios cannot be merged
exactly and raise CalibrationError.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import CalibrationError, UsageError
from . import _kernels as K
from . import methods
from ._threads import num_threads

log = logging.getLogger(__name__)

STATE_FORMAT = "onnx2trt_lib.calib.Histogram"
STATE_VERSION = 1
METHODS = ("entropy", "max", "percentile", "mse", "ncnn-kl")


# -- accumulation helpers: 1-D pieces of any array, per-thread count arrays ------------------
_POOL: ThreadPoolExecutor | None = None
_PARALLEL_MIN = 1 << 20  # below this many elements, one thread is faster than handing work out
_CHUNK = 1 << 22


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(num_threads(), 1), thread_name_prefix="calib")
    return _POOL


def pow2_ceil(value: float) -> float:
    """The smallest power of two >= value (0 for 0): the range of an exact (two-pass) histogram.

    Ranges that are powers of two are a function of the data's max alone and any two of them are
    a power of two apart, so histograms of any parts of the data merge exactly into the histogram
    of all of it (calib/histogram module notes): the result does not depend on how the data was
    split, ordered or batched. The price is resolution: the data's max falls in bins N/2..N.
    """
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"a range must be a finite number >= 0, got {value!r}")
    if value == 0.0:
        return 0.0
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= mantissa < 1
    result = math.ldexp(1.0, exponent - 1 if mantissa == 0.5 else exponent)
    if not math.isfinite(result):
        raise CalibrationError(
            f"range {value!r} has no power of two above it in float64; the values are too large"
        )
    return result


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous (start, stop) ranges covering [0, n), none empty."""
    parts = max(1, min(parts, n))
    edges = [n * p // parts for p in range(parts + 1)]
    return [(edges[p], edges[p + 1]) for p in range(parts)]


def _f16_table() -> np.ndarray:
    """The value as float64 of every float16 bit pattern (numba has no float16 type)."""
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float64)


_F16_VALUES = _f16_table()


def _flat_pieces(array: np.ndarray, chunk: int = _CHUNK) -> list[np.ndarray]:
    """1-D views of `array` (no copies for contiguous or 1-D strided data; block copies otherwise)."""
    a = array
    if a.ndim == 0 or a.size == 0:
        return [a.reshape(-1)]
    if a.flags.c_contiguous:
        flat = a.reshape(-1)
    elif a.flags.f_contiguous:
        flat = a.reshape(-1, order="F")
    elif a.ndim == 1:
        flat = a
    else:
        if a.shape[-1] >= 4096:  # long strided rows: iterate rows as views
            pieces: list[np.ndarray] = []
            for idx in np.ndindex(*a.shape[:-1]):
                pieces.append(a[idx])
            return pieces
        # short rows: copy bounded blocks of the leading axis
        per = max(1, chunk // max(1, a[0].size))
        return [np.ascontiguousarray(a[s : s + per]).reshape(-1) for s in range(0, a.shape[0], per)]
    if flat.shape[0] <= chunk:
        return [flat]
    return [flat[s : s + chunk] for s in range(0, flat.shape[0], chunk)]


def as_float_array(array: Any) -> np.ndarray:
    """float16/32/64 arrays pass through (views kept); other real dtypes become float64; others fail."""
    a = np.asarray(array)
    if a.dtype.kind == "f" and a.dtype.itemsize in (2, 4, 8):
        return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
    if a.dtype.kind in "fiub":  # integers, bool, long double
        return a.astype(np.float64)
    raise CalibrationError(
        f"cannot calibrate an array of dtype {a.dtype}; expected float16, float32 or float64"
    )


# float32/float64 kernels look at the raw bits: |x| as an unsigned integer is monotonic in the
# value and NaN/Inf have the largest patterns, so range checks and maxima become integer ops
# that vectorise (see _kernels.hist_bits_kernel).
_BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
_BITS_MAX_BINS = 1 << 30
_F64_MAX = float(np.finfo(np.float64).max)
_F32_MIN_NORMAL = 2.0**-126
_F32_MAX_POW2 = 2.0**127


_CONSTANTS: dict[
    np.dtype, tuple[type, Any, Any]
] = {}  # per call they cost more than a small tensor's binning


def _bit_constants(dtype: np.dtype) -> tuple[type, Any, Any]:
    """(unsigned type of the same size, mask without the sign bit, bits of +inf)."""
    found = _CONSTANTS.get(dtype)
    if found is None:
        u = _BITS[np.dtype(dtype)]
        mask = u((1 << (8 * np.dtype(dtype).itemsize - 1)) - 1)
        inf_bits = np.array(np.inf, dtype=dtype).view(u)[()]
        found = _CONSTANTS[np.dtype(dtype)] = (u, mask, inf_bits)
    return found


_FINITE_MAX = {
    np.dtype(np.float32): float(np.finfo(np.float32).max),
    np.dtype(np.float64): _F64_MAX,
}


def _hi_bits(hi: float, dtype: np.dtype, u: type) -> Any:
    """Bits of the largest finite non-negative `dtype` value <= hi (hi >= 0, float64)."""
    f = np.dtype(dtype).type
    h = f(min(hi, _FINITE_MAX[np.dtype(dtype)]))
    if float(h) > hi:
        h = np.nextafter(h, f(0))
    return np.array(h, dtype=dtype).view(u)[()]


def _kernel_scale(inv_w: float, dtype: np.dtype) -> float | np.float32:
    """inv_w as the kernel should multiply by: float32 for float32 data when that is exact.

    With a power-of-two inv_w (exact mode: power-of-two range over 2**k bins) that float32 holds,
    |x| * inv_w in float32 is exact (a power-of-two scaling; a product that underflows is below
    1, bin 0 either way, and binned values give products <= num_bins), so it equals the float64
    product and every bin index is the same; the kernel's float32 arithmetic vectorises twice as
    wide (binning ~10% faster on PP-OCRv4 activations). Otherwise the float64 product, as always.
    """
    if (
        dtype == np.float32
        and math.frexp(inv_w)[0] == 0.5
        and _F32_MIN_NORMAL <= inv_w <= _F32_MAX_POW2
    ):
        return np.float32(inv_w)
    return inv_w


def _from_bits(b: Any, dtype: np.dtype, u: type) -> float:
    return float(np.array(b, dtype=u).view(dtype)[()])


def _threads_for(size: int, threads: int | None) -> int:
    """None: every usable CPU for big arrays, one thread below _PARALLEL_MIN elements."""
    if threads is not None:
        return max(1, int(threads))
    return num_threads() if size >= _PARALLEL_MIN else 1


def abs_max(array: Any, *, threads: int | None = None) -> float:
    """max |x| over the finite values of `array` (0.0 when there are none); NaN/Inf ignored."""
    return abs_max_and_nonfinite(array, threads=threads)[0]


def abs_max_and_nonfinite(array: Any, *, threads: int | None = None) -> tuple[float, int]:
    """(max |x| over finite values, number of NaN/Inf values), threaded for big arrays."""
    a = as_float_array(array)
    pieces = _flat_pieces(a)
    if a.dtype == np.float16:
        pieces = [p.view(np.uint16) for p in pieces]

        def one(p: np.ndarray) -> tuple[float, int]:
            return K.abs_max_f16_kernel(p, _F16_VALUES)
    else:
        u, mask, inf_bits = _bit_constants(a.dtype)

        def one(p: np.ndarray) -> tuple[float, int]:
            b, nonfinite = K.abs_max_bits_kernel(p.view(u), mask, inf_bits)
            return _from_bits(b, a.dtype, u), nonfinite

    threads = _threads_for(a.size, threads)
    if threads > 1:
        if len(pieces) < threads:
            pieces = [p[s:e] for p in pieces for (s, e) in split(p.shape[0], threads)]
        results = list(_pool().map(one, pieces))
    else:
        results = [one(p) for p in pieces]
    return max((r[0] for r in results), default=0.0), sum(int(r[1]) for r in results)


def _run_pieces(
    array: np.ndarray,
    counts: np.ndarray,
    kernel32: Any,
    kernel16: Any,
    args: tuple,
    threads: int | None = None,
) -> list[tuple]:
    """Run a histogram kernel over 1-D pieces of `array`; big arrays use one count array per thread."""
    a = as_float_array(array)
    pieces = _flat_pieces(a)
    f16 = a.dtype == np.float16
    if f16:
        pieces = [p.view(np.uint16) for p in pieces]

    def call(p: np.ndarray, target: np.ndarray) -> tuple:
        if f16:
            return kernel16(p, _F16_VALUES, target, *args)
        return kernel32(p, target, *args)

    threads = _threads_for(a.size, threads)
    if threads <= 1:
        return [call(p, counts) for p in pieces]
    if len(pieces) < threads:  # few big pieces: cut them so every thread gets work
        pieces = [p[s:e] for p in pieces for (s, e) in split(p.shape[0], threads)]
    groups = [pieces[s:e] for s, e in split(len(pieces), threads)]

    def work(group: list[np.ndarray]) -> tuple[np.ndarray, list[tuple]]:
        local = np.zeros_like(counts)
        return local, [call(p, local) for p in group]

    results: list[tuple] = []
    for local, out in _pool().map(work, groups):
        counts += local
        results.extend(out)
    return results


def hist_pass(
    array: np.ndarray, counts: np.ndarray, inv_w: float, hi: float, threads: int | None = None
) -> tuple[int, int, int, int, float, float, float]:
    """Bin finite |x| <= hi into `counts` (in place).

    Returns (binned, top, nonfinite, over, max_over, amax, vmin); `over` values (finite, > hi)
    are left for `band_pass` after the caller grew the range.
    """
    a = as_float_array(array)
    kernel32: Any = K.hist_kernel
    # the blocked kernel keeps bin indices in 32 bits: use it while every index in range fits
    if a.dtype in _BITS and counts.shape[0] < _BITS_MAX_BINS and hi * inv_w < _BITS_MAX_BINS:
        u, mask, _ = _bit_constants(a.dtype)
        hib = _hi_bits(hi, a.dtype, u)
        scale = _kernel_scale(inv_w, a.dtype)

        def blocked(p: np.ndarray, target: np.ndarray, inv_w: float, hi: float) -> tuple:
            top, nonfinite, over, max_over, amax_b, neg_b, amax, vmin = K.hist_bits_kernel(
                p, p.view(u), target, scale, hi, hib, mask
            )
            amax = max(float(amax), _from_bits(amax_b, a.dtype, u))
            if neg_b > mask:  # sign bit set: the most negative value binned by the fast blocks
                vmin = min(-_from_bits(neg_b & mask, a.dtype, u), float(vmin))
            return top, nonfinite, over, max_over, amax, vmin

        kernel32 = blocked
        if a.flags.c_contiguous and a.size <= _CHUNK and _threads_for(a.size, threads) == 1:
            # one piece on this thread (most tensors of a batch): no piece lists, no reductions
            top, nonfinite, over, max_over, amax, vmin = blocked(a.reshape(-1), counts, inv_w, hi)
            return (
                a.size - int(nonfinite) - int(over),
                int(top),
                int(nonfinite),
                int(over),
                float(max_over),
                float(amax),
                float(vmin),
            )
    results = _run_pieces(a, counts, kernel32, K.hist_f16_kernel, (inv_w, hi), threads)
    nonfinite = sum(int(r[1]) for r in results)
    over = sum(int(r[2]) for r in results)
    binned = int(np.asarray(array).size) - nonfinite - over
    return (
        binned,
        sum(int(r[0]) for r in results),
        nonfinite,
        over,
        max((float(r[3]) for r in results), default=0.0),
        max((float(r[4]) for r in results), default=0.0),
        min((float(r[5]) for r in results), default=0.0),
    )


def band_pass(
    array: np.ndarray,
    counts: np.ndarray,
    inv_w: float,
    lo: float,
    hi: float,
    threads: int | None = None,
) -> tuple[int, int, float, float]:
    """Bin finite lo < |x| <= hi into `counts` -> (binned, top, amax, vmin)."""
    results = _run_pieces(
        array, counts, K.hist_band_kernel, K.hist_band_f16_kernel, (inv_w, lo, hi), threads
    )
    return (
        sum(int(r[0]) for r in results),
        sum(int(r[1]) for r in results),
        max((float(r[2]) for r in results), default=0.0),
        min((float(r[3]) for r in results), default=0.0),
    )


class Histogram:
    """Histogram of |x| for one tensor; `update` with batches, then `compute_amax`.

    Attributes: counts (int64[num_bins]), bin_width, num_bins, range_max (R = num_bins*bin_width
    top edge; 0 until a non-zero value arrives), amax_seen (max finite |x|), count (finite values
    binned), nonfinite (NaN/Inf seen, never binned), has_negatives (any x < 0), top (values on the
    top edge).

    One state is not thread-safe; different tensors' states can be updated from different
    threads (big arrays are already split over threads inside `update`).
    """

    def __init__(
        self,
        num_bins: int = 2048,
        *,
        range_max: float | None = None,
        count_zeros: bool = False,
        pow2: bool = False,
    ) -> None:
        if int(num_bins) != num_bins or num_bins < 1:
            raise UsageError(f"num_bins must be a positive integer, got {num_bins!r}")
        self.num_bins = int(num_bins)
        self.counts = np.zeros(self.num_bins, dtype=np.int64)
        self.fixed = False
        self.range_max = 0.0
        if range_max is not None:
            r = float(range_max)
            if not (math.isfinite(r) and r >= 0):
                raise UsageError(
                    f"range_max must be a finite number >= 0 (or None), got {range_max!r}"
                )
            # 0 (an all-zero first pass) behaves like None until a non-zero value arrives
            self.fixed = r > 0
            self.range_max = r
        self.top = 0
        self.count = 0
        self.nonfinite = 0
        self.has_negatives = False
        self.amax_seen = 0.0
        # exact zeros among the binned values (all in bin 0), counted only when asked: ncnn-kl
        # leaves them out as ncnn2table does; None = not counted
        self.zeros: int | None = 0 if count_zeros else None
        # without a range_max: start at pow2_ceil(first batch's max) instead of the max itself, so
        # the range only ever takes powers of two and ends at pow2_ceil(max of all data): the exact
        # (two-pass) histogram, in one read (doubling is exact; see the module notes)
        self.pow2 = bool(pow2)

    # -- geometry ----------------------------------------------------------------------------
    @property
    def bin_width(self) -> float:
        return self.range_max / self.num_bins

    @property
    def bin_edges(self) -> np.ndarray:
        return np.arange(self.num_bins + 1, dtype=np.float64) * self.bin_width

    def _inv_width(self) -> float:
        w = self.bin_width
        if w > 0 and 1.0 / w == math.inf:  # float64 ranges below ~1e-305: the bin rule cannot run
            raise CalibrationError(
                f"histogram range {self.range_max!r} is too small for {self.num_bins} float64 bins; scale the data up"
            )
        return 1.0 / w if w > 0 else 0.0

    def _double(self) -> None:
        """R -> 2R: bin k of the new histogram is old bins 2k and 2k+1 (exact, see module notes)."""
        if not math.isfinite(self.range_max * 2.0):
            raise CalibrationError(
                f"histogram range {self.range_max!r} cannot double without overflowing float64; the tensor's "
                "values are too large to calibrate"
            )
        n = self.num_bins
        c = self.counts
        new = np.zeros_like(c)
        half = n // 2
        new[:half] = c[0 : 2 * half : 2] + c[1 : 2 * half : 2]
        if n % 2:
            new[half] += c[n - 1]
        elif self.top:
            # values exactly on the old top edge: floor(N/2) is bin N/2, not the pair's N/2 - 1
            new[half - 1] -= self.top
            new[half] += self.top
        self.counts = new
        self.top = 0
        self.range_max *= 2.0

    # -- accumulation ------------------------------------------------------------------------
    def update(self, array: Any, *, threads: int | None = None) -> None:
        """Add the finite |values| of `array` (float16/32/64, any shape/strides); NaN/Inf only counted.

        `threads`: how many threads bin this array (None: every CPU for big arrays); callers that
        already run many updates side by side pass 1.
        """
        a = as_float_array(array)
        if a.size == 0:
            return
        if self.range_max == 0.0:
            first_max, _ = abs_max_and_nonfinite(a, threads=threads)
            if first_max > 0:
                self.range_max = pow2_ceil(first_max) if self.pow2 else first_max
        hi = self.range_max
        binned, top, nonfinite, over, max_over, amax, vmin = hist_pass(
            a, self.counts, self._inv_width(), hi, threads
        )
        self.top += top
        if over:
            doublings = 0
            while self.range_max < max_over:
                self._double()
                doublings += 1
            level = logging.WARNING if self.fixed else logging.DEBUG
            log.log(
                level,
                "histogram range grew %dx to %.6g for %d values beyond %.6g",
                2**doublings,
                self.range_max,
                over,
                hi,
            )
            b2, top2, amax2, vmin2 = band_pass(
                a, self.counts, self._inv_width(), hi, self.range_max, threads
            )
            if b2 != over:  # cannot happen: the new range covers max_over
                raise CalibrationError(
                    f"internal: {over - b2} values beyond the grown range {self.range_max!r}"
                )
            binned += b2
            self.top += top2  # _double moved the earlier top values and reset the count
            amax = max(amax, amax2)
            vmin = min(vmin, vmin2)
        self.count += binned
        if self.zeros is not None:
            self.zeros += int(np.count_nonzero(a == 0))
        self.nonfinite += nonfinite
        self.has_negatives = self.has_negatives or vmin < 0
        self.amax_seen = max(self.amax_seen, amax)

    def grow_to(self, range_max: float) -> None:
        """Double the range until it is `range_max` (a power-of-two multiple of it; exact).

        A histogram with no range yet (only zeros binned, all in bin 0) takes `range_max` as it is.
        """
        if self.range_max == 0.0:
            self.range_max = float(range_max)
            return
        while self.range_max < range_max:
            self._double()
        if self.range_max != range_max:
            raise CalibrationError(
                f"internal: range {self.range_max!r} is not a power-of-two multiple of {range_max!r}"
            )

    def copy(self) -> Histogram:
        # attribute copy, not a state_dict round trip (2048 Python ints a tensor): merges of many
        # shards' states (calib.distributed) copy every histogram
        out = Histogram.__new__(Histogram)
        out.__dict__.update(self.__dict__)
        out.counts = self.counts.copy()
        return out

    def merge(self, other: Histogram) -> Histogram:
        """A new state equal to the histogram of both inputs' data (see module notes on widths)."""
        if not isinstance(other, Histogram):
            raise UsageError(
                f"can only merge a Histogram with a Histogram, got {type(other).__name__}"
            )
        if other.num_bins != self.num_bins:
            raise CalibrationError(
                f"cannot merge histograms with {self.num_bins} and {other.num_bins} bins; "
                "collect with the same num_bins"
            )
        a, b = self.copy(), other.copy()
        if a.range_max > 0 and b.range_max > 0:
            lo_h, hi_h = (a, b) if a.range_max < b.range_max else (b, a)
            ratio = hi_h.range_max / lo_h.range_max
            if math.frexp(ratio)[0] != 0.5:
                raise CalibrationError(
                    f"cannot merge histograms exactly: ranges {a.range_max!r} and {b.range_max!r} are not a power of "
                    "two apart; collect with a common range_max (two-pass mode) to merge across processes"
                )
            while lo_h.range_max < hi_h.range_max:
                lo_h._double()
        out = Histogram(self.num_bins)
        out.range_max = max(a.range_max, b.range_max)
        # an empty or all-zero side (range 0) says nothing about how the range was set: the result
        # must not depend on which part of the data held only zeros
        ranged = [h.fixed for h in (a, b) if h.range_max > 0]
        out.fixed = bool(ranged) and all(ranged)
        out.counts = a.counts + b.counts
        out.top = a.top + b.top  # a doubled one has top = 0 (its edge values moved inside)
        out.count = a.count + b.count
        out.nonfinite = a.nonfinite + b.nonfinite
        out.has_negatives = a.has_negatives or b.has_negatives
        out.amax_seen = max(a.amax_seen, b.amax_seen)
        out.zeros = None if a.zeros is None or b.zeros is None else a.zeros + b.zeros
        return out

    # -- thresholds --------------------------------------------------------------------------
    def compute_amax(self, method: str = "entropy", **options: Any) -> float:
        """amax (> 0, finite) by `method`: "entropy" | "max" | "percentile" | "mse".

        Options: entropy: num_quant_bins=128, start_bin=128, unsigned=False (256 levels);
        percentile: percentile=99.99; mse: unsigned=False, start_bin=1; ncnn-kl (ncnn2table's
        search, exact zeros left out: needs a histogram made with count_zeros=True): target_bins=128.
        Defined results: all values zero -> ZERO_AMAX (1.0); constant |x| = c -> entropy gives
        (N + 0.5) * c / N; fewer bins than num_quant_bins -> (N + 0.5) * w; percentile is clipped
        to amax_seen. No finite value at all raises CalibrationError.
        """
        if method not in METHODS:
            raise UsageError(
                f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}"
            )
        if self.count == 0:
            why = (
                f"all {self.nonfinite} values were NaN/Inf"
                if self.nonfinite
                else "no data was added"
            )
            raise CalibrationError(f"cannot compute an amax: {why}")
        if self.amax_seen == 0.0:
            return methods.ZERO_AMAX
        unsigned = bool(options.pop("unsigned", False))
        if unsigned and self.has_negatives:
            raise CalibrationError(
                "unsigned=True needs a non-negative tensor, but negative values were seen"
            )
        if method == "max":
            _no_options(method, options)
            return float(self.amax_seen)
        if method == "entropy":
            nq = int(options.pop("num_quant_bins", 256 if unsigned else 128))
            start = int(options.pop("start_bin", nq))
            _no_options(method, options)
            amax, _, _ = methods.entropy_threshold(
                self.counts, self.bin_width, num_quant_bins=nq, start_bin=start
            )
            return float(amax)
        if method == "ncnn-kl":
            if unsigned:
                raise UsageError(
                    "method 'ncnn-kl' has no unsigned option (ncnn's INT8 is symmetric)"
                )
            target = int(options.pop("target_bins", methods.NCNN_TARGET_BINS))
            _no_options(method, options)
            if self.zeros is None:
                raise CalibrationError(
                    "method 'ncnn-kl' leaves exact zeros out, but this histogram did not count them; "
                    "collect again with method ncnn-kl"
                )
            counts = self.counts.copy()
            counts[0] -= self.zeros
            amax, _, _ = methods.ncnn_kl_threshold(counts, self.bin_width, target_bins=target)
            return float(amax)
        if method == "percentile":
            pct = float(options.pop("percentile", 99.99))
            _no_options(method, options)
            return float(
                min(methods.percentile_amax(self.counts, self.bin_width, pct), self.amax_seen)
            )
        start = int(options.pop("start_bin", 1))
        _no_options(method, options)
        amax, _ = methods.mse_amax(self.counts, self.bin_width, unsigned=unsigned, start_bin=start)
        return float(amax)

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; `Histogram.from_state(json.loads(json.dumps(s)))` is exact."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "num_bins": self.num_bins,
            "range_max": float(self.range_max),
            "fixed": bool(self.fixed),
            "counts": [int(c) for c in self.counts],
            "top": int(self.top),
            "count": int(self.count),
            "nonfinite": int(self.nonfinite),
            "has_negatives": bool(self.has_negatives),
            "amax_seen": float(self.amax_seen),
            **({"zeros": int(self.zeros)} if self.zeros is not None else {}),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Histogram:
        """Inverse of state_dict (counts may be a list or an array)."""
        try:
            if (
                state.get("format", STATE_FORMAT) != STATE_FORMAT
                or int(state.get("version", 1)) != STATE_VERSION
            ):
                raise ValueError(f"format {state.get('format')!r} version {state.get('version')!r}")
            counts = np.asarray(state["counts"], dtype=np.int64)
            if (
                counts.ndim != 1 or int(state["num_bins"]) != counts.shape[0]
            ):  # before allocating num_bins
                raise ValueError(f"num_bins {state['num_bins']!r} but {counts.size} counts")
            h = cls(int(state["num_bins"]))
            h.range_max = float(state["range_max"])
            h.fixed = bool(state["fixed"])
            h.top = int(state["top"])
            h.count = int(state["count"])
            h.nonfinite = int(state["nonfinite"])
            h.has_negatives = bool(state["has_negatives"])
            h.amax_seen = float(state["amax_seen"])
            h.zeros = int(state["zeros"]) if state.get("zeros") is not None else None
        except (
            KeyError,
            TypeError,
            ValueError,
            OverflowError,
        ) as exc:  # Overflow: Infinity or 2**70 as a count
            raise CalibrationError(f"not a Histogram state: {exc}") from None
        if counts.shape != (h.num_bins,) or np.any(counts < 0) or int(counts.sum()) != h.count:
            raise CalibrationError(
                f"Histogram state is inconsistent: {counts.shape[0] if counts.ndim else 0} counts summing to "
                f"{int(counts.sum()) if counts.size else 0} for num_bins={h.num_bins}, count={h.count}"
            )
        if not (math.isfinite(h.range_max) and h.range_max >= 0 and math.isfinite(h.amax_seen)):
            raise CalibrationError(
                f"Histogram state has a bad range {h.range_max!r} or amax {h.amax_seen!r}"
            )
        if (
            not 0 <= h.top <= (int(counts[-1]) if counts.size else 0)
        ):  # top values sit in the last bin
            raise CalibrationError(
                f"Histogram state is inconsistent: top={h.top} but the last bin holds {int(counts[-1])}"
            )
        if h.zeros is not None and not 0 <= h.zeros <= (int(counts[0]) if counts.size else 0):
            raise CalibrationError(
                f"Histogram state is inconsistent: zeros={h.zeros} but bin 0 holds {int(counts[0])}"
            )
        h.counts = counts.copy()
        return h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Histogram) and self.state_dict() == other.state_dict()

    def __repr__(self) -> str:
        return (
            f"Histogram(num_bins={self.num_bins}, range_max={self.range_max:.6g}, count={self.count}, "
            f"nonfinite={self.nonfinite}, amax_seen={self.amax_seen:.6g})"
        )


def _no_options(method: str, options: dict[str, Any]) -> None:
    if options:
        raise UsageError(
            f"calibration method {method!r} does not take option(s) {', '.join(sorted(options))}"
        )

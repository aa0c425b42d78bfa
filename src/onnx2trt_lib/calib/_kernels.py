"""All numba kernels of the calibration engine, in one place with one set of flags.

Every kernel is `@njit(cache=True, nogil=True)`: compiled once per signature and cached on
disk, and it releases the GIL so Python threads can run several chunks (or several tensors)
at once. Nothing here is `parallel=True`: numba's threading layer costs ~24 ms per parallel
region on a busy machine, far more than one tensor's KL search.

The plain numpy twin of every kernel is `reference.py`; the tests compare the two.
"""

from __future__ import annotations

import math
from typing import Literal, TypedDict

import numpy as np
from numba import njit, uintp


class _Flags(TypedDict):
    cache: bool
    nogil: bool
    fastmath: bool
    error_model: Literal["python", "numpy"]


# One place for the flags. fastmath stays off: the KL search must match the reference
# (and IEEE NaN/Inf checks must keep working).
FLAGS: _Flags = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}

# Absolute tolerance below which two KL values count as a tie (the largest candidate wins).
# The KL evaluation itself is accurate to ~1e-14 absolute, so exact float equality would make
# "ties" depend on rounding order; 1e-12 nats is far below any real difference.
KL_TIE_ATOL = 1e-12

_FLOAT64_MAX = 1.7976931348623157e308


# ---------------------------------------------------------------------------------------------
# |x| maximum
# ---------------------------------------------------------------------------------------------
@njit(**FLAGS)
def abs_max_kernel(x):
    """(max |x| over finite values, number of NaN/Inf) of a 1-D float32/float64 array."""
    amax = 0.0
    nonfinite = 0
    for j in range(x.shape[0]):
        a = abs(np.float64(x[j]))
        if a <= _FLOAT64_MAX:  # finite (NaN compares False)
            if a > amax:
                amax = a
        else:
            nonfinite += 1
    return amax, nonfinite


@njit(**FLAGS)
def abs_max_f16_kernel(bits, table):
    """abs_max_kernel for float16 data seen as uint16 bits; `table[b]` = the value as float64."""
    amax = 0.0
    nonfinite = 0
    for j in range(bits.shape[0]):
        a = abs(table[bits[j]])
        if a <= _FLOAT64_MAX:
            if a > amax:
                amax = a
        else:
            nonfinite += 1
    return amax, nonfinite


# ---------------------------------------------------------------------------------------------
# histogram accumulation
# ---------------------------------------------------------------------------------------------
# Bin rule (shared with reference.bin_index): for finite a = |x| <= hi,
#   k = floor(a * inv_w)  (float64 product, inv_w = 1 / bin_width),  k = N-1 when k >= N.
# Values with a > hi are not binned; the kernel reports how many and their maximum, so the
# caller can grow the range (pair-merge) and bin them with hist_band_kernel (lo < a <= hi).
# `top` counts the values clipped from k >= N into bin N-1 (they sit on the top edge);
# pair-merging needs it to stay exact. The hot loop has one predictable compare; the index is
# unsigned (no negative-index wraparound code), amax/min are branch-free max/min.
# Measured on this machine: ~1.0 G elements/s per core for float32 (0.85 with a signed index,
# 0.35 with a second range compare in the hot loop).
@njit(**FLAGS)
def hist_kernel(x, counts, inv_w, hi):
    """-> (top, nonfinite, over, max_over, amax, vmin); binned = len(x) - nonfinite - over."""
    n_bins = uintp(counts.shape[0])
    last = uintp(counts.shape[0] - 1)
    top = 0
    nonfinite = 0
    over = 0
    max_over = 0.0
    amax = 0.0
    vmin = 0.0
    for j in range(x.shape[0]):
        v = np.float64(x[j])
        a = abs(v)
        if a <= hi:
            k = uintp(a * inv_w)
            if k >= n_bins:
                k = last
                top += 1
            counts[k] += 1
            amax = max(a, amax)
            vmin = min(v, vmin)
        elif a <= _FLOAT64_MAX:
            over += 1
            max_over = max(a, max_over)
        else:
            nonfinite += 1
    return top, nonfinite, over, max_over, amax, vmin


# Blocked variant for float32/float64 (the hot path; hist_kernel above is its per-block fallback
# and its definition of the result). Measured (100M N(0,1) float32, one thread, CPU time, see
# benchmarks/results/entropy.md): hist_kernel ~1.0 G elements/s, this ~1.5 G/s (ReLU-like data
# with half zeros: 0.96 -> 1.15). Per block of _BLOCK elements:
#   1. a branch-free, vectorised pass computes every bin index into a small buffer, and checks
#      "finite and |x| <= hi" on the raw bits (|x| as an unsigned integer is monotonic, NaN/Inf
#      have the largest patterns), with max |x| and the largest negative value also kept as bits
#      (integer max reductions vectorise; float ones would need fastmath, which changes NaN rules);
#   2. if every value passed, the indices are scattered into _NSUB sub-histograms (neighbouring
#      elements hit different arrays, so a run of equal bins is not one long store-to-load chain);
#      a block with any NaN/Inf or value > hi is redone by hist_kernel (exactly the old code), so
#      data with such values in most blocks runs at about hist_kernel's speed.
# The bin is hist_kernel's product, so the counts are identical; no fastmath. The caller passes
# a float32 inv_w only where the product is exact in float32 (a power-of-two bin width, as in
# exact mode: histogram._kernel_scale); any other width keeps the float64 product, since a
# float32 one would move values near bin edges. Tried and not kept: 4 or 8
# sub-histograms (slower: 4 x 2048 uint32 fill L1), blocks of 256 or 4096, 32-bit block counters;
# 4 uint16 sub-histograms flushed every 64K values: +8-17% on PP-OCRv4 activations, -19% on N(0,1).
# Run-length counting (on PP-OCRv4 activations 51% of neighbours share a bin, so the stores form
# chains): a branch-free run register with the stores of repeats sent to dummy slots scattered
# 1.13 G/s vs 1.87 G/s for the 2 sub-histograms (scatter alone, dev box).
_BLOCK = 1024
_NSUB = 2
# sub-histogram rows sit _PAD counts apart beyond num_bins: rows a multiple of 4 KiB apart
# (2048 uint32 bins = 8 KiB) make the CPU see false store-to-load dependencies (4K aliasing)
_PAD = 16
_FLUSH = 1 << 30  # sub-histograms are uint32: fold them into `counts` well before they can wrap


@njit(**FLAGS)
def hist_bits_kernel(x, bits, counts, inv_w, hi, hib, mask):
    """hist_kernel for float32/float64 `x`; `bits` = x viewed as uint32/uint64 (same strides).

    hib = the largest |x| bit pattern whose value is <= hi and finite; mask = ~sign bit.
    inv_w is float64, or float32 for float32 `x` when that product is exact (a power of two:
    histogram._kernel_scale); |x| * inv_w is computed in inv_w's type, the same bins either way.
    -> (top, nonfinite, over, max_over, amax_bits, neg_bits, amax, vmin): amax_bits / neg_bits
    are the largest |x| and the largest raw pattern (the most negative value when > sign bit)
    over the vectorised blocks; amax / vmin cover the fallback blocks.
    """
    n = x.shape[0]
    stride = uintp(counts.shape[0] + _PAD)
    last = np.uint32(counts.shape[0] - 1)
    sub = np.zeros(_NSUB * (counts.shape[0] + _PAD), dtype=np.uint32)
    idx = np.empty(_BLOCK, dtype=np.uint32)
    zero = mask & np.uint8(0)
    amax_bits = zero
    neg_bits = zero
    top = 0
    nonfinite = 0
    over = 0
    max_over = 0.0
    amax = 0.0
    vmin = 0.0
    pending = 0
    fzero = inv_w - inv_w  # 0 in inv_w's type: float32 with a float32 inv_w (see the docstring)
    for start in range(0, n, _BLOCK):
        m = min(_BLOCK, n - start)
        xb = x[start : start + m]
        bb = bits[start : start + m]
        bad = 0
        tb = 0
        bmax = zero
        nmax = zero
        for j in range(m):
            raw = bb[j]
            ab = raw & mask
            ok = ab <= hib
            bad += 0 if ok else 1
            a = abs(xb[j]) if ok else fzero
            k = np.uint32(np.int32(a * inv_w))
            tb += 1 if k > last else 0
            idx[j] = min(k, last)
            bmax = max(bmax, ab if ok else zero)
            nmax = max(nmax, raw if ok else zero)
        if bad == 0:
            j = 0
            while j + _NSUB <= m:
                for r in range(_NSUB):
                    sub[uintp(r) * stride + uintp(idx[j + r])] += np.uint32(1)
                j += _NSUB
            while j < m:
                sub[uintp(idx[j])] += np.uint32(1)
                j += 1
            top += tb
            amax_bits = max(amax_bits, bmax)
            neg_bits = max(neg_bits, nmax)
            pending += m
            if pending >= _FLUSH:
                _flush_sub(sub, counts)
                pending = 0
        else:
            t2, nf2, ov2, mo2, am2, vm2 = hist_kernel(xb, counts, inv_w, hi)
            top += t2
            nonfinite += nf2
            over += ov2
            max_over = max(max_over, mo2)
            amax = max(amax, am2)
            vmin = min(vmin, vm2)
    _flush_sub(sub, counts)
    return top, nonfinite, over, max_over, amax_bits, neg_bits, amax, vmin


@njit(**FLAGS)
def _flush_sub(sub, counts):
    nb = counts.shape[0]
    stride = nb + _PAD
    for r in range(_NSUB):
        for k in range(nb):
            counts[k] += sub[r * stride + k]
            sub[r * stride + k] = 0


@njit(**FLAGS)
def abs_max_bits_kernel(bits, mask, inf_bits):
    """abs_max_kernel on float32/float64 bits -> (largest finite |x| as bits, number of NaN/Inf)."""
    zero = mask & np.uint8(0)
    amax = zero
    nonfinite = 0
    for j in range(bits.shape[0]):
        ab = bits[j] & mask
        fin = ab < inf_bits
        nonfinite += 0 if fin else 1
        amax = max(amax, ab if fin else zero)
    return amax, nonfinite


@njit(**FLAGS)
def hist_f16_kernel(bits, table, counts, inv_w, hi):
    """hist_kernel for float16 data seen as uint16 bits (numba has no float16); table[b] = value."""
    n_bins = uintp(counts.shape[0])
    last = uintp(counts.shape[0] - 1)
    top = 0
    nonfinite = 0
    over = 0
    max_over = 0.0
    amax = 0.0
    vmin = 0.0
    for j in range(bits.shape[0]):
        v = table[bits[j]]
        a = abs(v)
        if a <= hi:
            k = uintp(a * inv_w)
            if k >= n_bins:
                k = last
                top += 1
            counts[k] += 1
            amax = max(a, amax)
            vmin = min(v, vmin)
        elif a <= _FLOAT64_MAX:
            over += 1
            max_over = max(a, max_over)
        else:
            nonfinite += 1
    return top, nonfinite, over, max_over, amax, vmin


@njit(**FLAGS)
def hist_band_kernel(x, counts, inv_w, lo, hi):
    """Bin only finite lo < |x| <= hi (second pass after the range grew) -> (binned, top, amax, vmin)."""
    n_bins = counts.shape[0]
    top = 0
    binned = 0
    amax = 0.0
    vmin = 0.0
    for j in range(x.shape[0]):
        v = np.float64(x[j])
        a = abs(v)
        if lo < a <= hi:
            k = int(a * inv_w)
            if k >= n_bins:
                k = n_bins - 1
                top += 1
            counts[k] += 1
            binned += 1
            amax = max(a, amax)
            vmin = min(v, vmin)
    return binned, top, amax, vmin


@njit(**FLAGS)
def hist_band_f16_kernel(bits, table, counts, inv_w, lo, hi):
    n_bins = counts.shape[0]
    top = 0
    binned = 0
    amax = 0.0
    vmin = 0.0
    for j in range(bits.shape[0]):
        v = table[bits[j]]
        a = abs(v)
        if lo < a <= hi:
            k = int(a * inv_w)
            if k >= n_bins:
                k = n_bins - 1
                top += 1
            counts[k] += 1
            binned += 1
            amax = max(a, amax)
            vmin = min(v, vmin)
    return binned, top, amax, vmin


# ---------------------------------------------------------------------------------------------
# KL (entropy) threshold search
# ---------------------------------------------------------------------------------------------
# The spec (reference.kl_curve does it literally, one candidate at a time):
#   for every candidate i in [start, N]:
#     1. P = H[0:i], P[i-1] += sum(H[i:])                       (outliers folded into the last bin)
#     2. Q = unclipped H[0:i] merged into B groups (bin k -> group floor(k*B/i)), each group's
#        total spread evenly over its bins with H > 0
#     3. KL(P/sum P || Q/sum Q), +inf when some P > 0 has Q = 0
# Algebra used here (exact in real arithmetic). With T = sum H, C = sum H[0:i], tail = T - C,
# group g = bins [s_g, s_{g+1}), s_g = ceil(g*i/B), G_g = its total, n_g = its non-zero bins:
#     KL_i = (1/T) * sum_k P_k ln(P_k / Q_k) + ln(C / T)
#     sum over a group without the last bin: D(s, e) = sum_k H_k ln H_k - G ln G + G ln n
# Groups only ever have length L = floor(i/B) or L + 1, so D is tabulated once per (length,
# start) while i sweeps [B*L, B*(L+1)): ~N*(N/B + 1) logs in total instead of one log per bin
# per candidate, and each candidate costs B table reads (O(B) instead of O(i)). The last
# group, which holds the folded tail, is evaluated directly (two logs).


@njit(**FLAGS)
def _fill_group_table(h, hlnh, cum, integral, nzcum, lnint, length, row, limit):
    """row[s] = D(s, s+length) for every start s < limit with s+length <= N; 0 from there on.

    n comes from prefix sums, and so does G when the counts are integers (then exact); float
    counts have G summed over the group, since a difference of large prefix sums loses the small
    ones (1987s next to 0.001 lost ~1e-9 of their KL). sum H ln H is always summed directly.
    `limit`: the candidates that read a row of this length start no group at or beyond it (the
    caller's bound); the starts past it are never read, so they are not computed (each costs a
    log: this halves the table work of a 2048-bin search).
    """
    n = hlnh.shape[0]
    stop = min(n - length + 1, limit)
    for s in range(stop):
        e = s + length
        g = cum[e] - cum[s]
        sl = 0.0
        if integral:
            if g > 0.0:
                for k in range(s, e):
                    sl += hlnh[k]
        else:
            g = 0.0
            for k in range(s, e):
                g += h[k]
                sl += hlnh[k]
        if g > 0.0:
            row[s] = sl - g * math.log(g) + g * lnint[nzcum[e] - nzcum[s]]
        else:
            row[s] = 0.0
    for s in range(stop, n):
        row[s] = 0.0


@njit(**FLAGS)
def kl_search_kernel(h, num_quant_bins, start, kl_out):
    """Fill kl_out[i - start] = KL_i for i in [start, N]; return the chosen m (see the comments above).

    `h` is float64 (counts), `kl_out` has N - start + 1 slots. Requires start >= num_quant_bins,
    N >= start and sum(h) > 0 (the Python wrapper handles the other cases).
    """
    n = h.shape[0]
    nq = num_quant_bins
    total = 0.0
    for k in range(n):
        total += h[k]
    # per-bin H ln H, prefix sums of H (cum[k] = sum H[0:k])
    hlnh = np.empty(n)
    cum = np.empty(n + 1)
    nzcum = np.empty(n + 1, dtype=np.int64)
    cum[0] = 0.0
    nzcum[0] = 0
    integral = total < 2.0**53  # prefix sums of integer counts below 2**53 are exact
    for k in range(n):
        hk = h[k]
        hlnh[k] = hk * math.log(hk) if hk > 0.0 else 0.0
        cum[k + 1] = cum[k] + hk
        if hk != math.floor(hk):
            integral = False
        nzcum[k + 1] = nzcum[k] + (1 if hk > 0.0 else 0)
    max_len = (n + nq - 1) // nq + 1
    lnint = np.empty(max_len + 1)
    lnint[0] = 0.0
    for k in range(1, max_len + 1):
        lnint[k] = math.log(k)
    row_a = np.empty(n)  # D for groups of length L
    row_b = np.empty(n)  # D for groups of length L + 1
    cur_len = -1
    best_kl = math.inf
    best_i = n
    for i in range(start, n + 1):
        length = i // nq
        if length != cur_len:
            # a row of length l is read by candidates i < nq * (l + 1) (as row_a) or, for length
            # l - 1, i < nq * l (as row_b), at group starts s < i: starts from nq * (l + 1) on
            # are never read
            if length == cur_len + 1 and cur_len > 0:
                row_a, row_b = row_b, row_a  # old L+1 row is the new L row
            else:
                _fill_group_table(
                    h, hlnh, cum, integral, nzcum, lnint, length, row_a, nq * (length + 1)
                )
            _fill_group_table(
                h, hlnh, cum, integral, nzcum, lnint, length + 1, row_b, nq * (length + 2)
            )
            cur_len = length
        c_i = cum[i]
        # exact zero when nothing lies beyond i (float counts could leave rounding dust)
        tail = total - c_i if nzcum[n] > nzcum[i] else 0.0
        last_p = h[i - 1] + tail
        if last_p > 0.0 and h[i - 1] == 0.0:
            kl_out[i - start] = math.inf  # step 3: P > 0 where Q = 0
            continue
        # groups 0 .. nq-2: tabulated D(s, e)
        # group ends e_g = ceil((g+1)*i/nq), stepped without divisions: (g+1)*i = cq*nq + cr
        step_r = i - length * nq
        acc = 0.0
        s = 0
        cq = 0
        cr = 0
        for _ in range(nq - 1):
            cq += length
            cr += step_r
            if cr >= nq:
                cr -= nq
                cq += 1
            e = cq + (1 if cr > 0 else 0)
            if e - s == length:
                acc += row_a[s]
            else:
                acc += row_b[s]
            s = e
        # last group [s, i): bins before i-1 as usual, bin i-1 carries the tail
        g_sum = c_i - cum[s] if integral else h[i - 1]
        sl = 0.0
        for k in range(s, i - 1):
            if not integral:
                g_sum += h[k]
            sl += hlnh[k]
        if g_sum > 0.0:
            nz = nzcum[i] - nzcum[s]
            ln_q = math.log(g_sum) - lnint[nz]
            acc += sl - (g_sum + tail) * ln_q
            if last_p > 0.0:
                acc += last_p * math.log(last_p)
        if tail > 0.0:
            ln_ct = math.log1p(-tail / total) if tail < 0.5 * total else math.log(c_i / total)
        else:
            ln_ct = 0.0
        kl = acc / total + ln_ct
        kl_out[i - start] = kl
    # argmin with ties (within KL_TIE_ATOL) going to the largest candidate
    for t in range(kl_out.shape[0]):
        if kl_out[t] < best_kl:
            best_kl = kl_out[t]
    for t in range(kl_out.shape[0] - 1, -1, -1):
        if kl_out[t] <= best_kl + KL_TIE_ATOL:
            best_i = start + t
            break
    return best_i


# ---------------------------------------------------------------------------------------------
# MSE-optimal amax
# ---------------------------------------------------------------------------------------------
@njit(**FLAGS)
def mse_curve_kernel(h, bin_width, levels, start, out):
    """out[j - start] = sum_k h_k (c_k - fq(c_k))^2 for candidate amax = j * bin_width, j in [start, N].

    c_k = (k + 0.5) * bin_width (bin centre); fq quantises to `levels` steps of amax/levels
    with round-half-up and clips at amax.
    """
    n = h.shape[0]
    for j in range(start, n + 1):
        amax = j * bin_width
        scale = amax / levels
        err = 0.0
        for k in range(n):
            hk = h[k]
            if hk > 0.0:
                c = (k + 0.5) * bin_width
                q = math.floor(c / scale + 0.5)
                if q > levels:
                    q = levels
                d = c - q * scale
                err += hk * d * d
        out[j - start] = err


# ---------------------------------------------------------------------------------------------
# ncnn2table's KL search (Tencent/ncnn tools/quantize/ncnn2table.cpp, QuantNet::quantize_KL)
# ---------------------------------------------------------------------------------------------
# Differs from TensorRT's search above: P and Q both get eps on every bin (no zero masks), Q
# merges the normalised *unclipped* histogram into `target` groups with fractional edges
# (a bin split between two groups contributes proportionally) and spreads each group's mean
# over all its bins, candidates are t = target .. N-1 and strict `<` keeps the first minimum.
# Arithmetic is float64 on float32-rounded normalised counts (ncnn's own is float32, so
# candidates whose KL differ by float32 rounding can come out either way).


@njit(**FLAGS)
def _ncnn_group(j, t, target):
    """(left_upper, left_scale, right_lower, right_scale) of group j of t bins in `target` groups."""
    per = t / target  # exact: t and target are small integers, target a power of two in practice
    start = j * per
    end = (j + 1) * per if j < target - 1 else float(t)
    left_upper = int(math.ceil(start))
    left_scale = left_upper - start
    right_lower = int(math.floor(end))
    right_scale = end - right_lower
    return left_upper, left_scale, right_lower, right_scale


@njit(**FLAGS)
def ncnn_kl_kernel(normed, target, eps, kl_out):
    """Fill kl_out[t - target] with candidate t's KL for t in [target, N); return the first minimum."""
    n = normed.shape[0]
    clip = np.empty(n)
    expand = np.empty(n)
    quant = np.empty(target)
    tail = np.empty(n + 1)  # tail[t] = sum normed[t:]
    tail[n] = 0.0
    for k in range(n - 1, -1, -1):
        tail[k] = tail[k + 1] + normed[k]
    best_kl = math.inf
    best_t = target
    for t in range(target, n):
        for k in range(t):
            clip[k] = eps + normed[k]
        clip[t - 1] += tail[t]
        for j in range(target):
            lu, ls, rl, rs = _ncnn_group(j, t, target)
            q = 0.0
            if ls > 0.0:
                q += ls * normed[lu - 1]
            if rs > 0.0:
                q += rs * normed[rl]
            for k in range(lu, rl):
                q += normed[k]
            quant[j] = q / (rl - lu + ls + rs)
        for k in range(t):
            expand[k] = eps
        for j in range(target):
            lu, ls, rl, rs = _ncnn_group(j, t, target)
            if ls > 0.0:
                expand[lu - 1] += ls * quant[j]
            if rs > 0.0:
                expand[rl] += rs * quant[j]
            for k in range(lu, rl):
                expand[k] += quant[j]
        kl = 0.0
        for k in range(t):
            kl += clip[k] * math.log(clip[k] / expand[k])
        kl_out[t - target] = kl
        if kl < best_kl:
            best_kl = kl
            best_t = t
    return best_t

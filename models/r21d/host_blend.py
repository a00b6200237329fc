"""The CPU's preprocessing in one pass: a decoded frame's planes -> the normalised region ``h x w x 3``.

On a GPU the decode threads only gather each frame's taps (:func:`preprocess.gather_planes_into`)
and the device does the rest (YUV -> RGB on the taps, /255, bilinear blend, normalisation:
:func:`utils.video.decoders.yuv.yuv_taps_to_rgb`, :func:`preprocess.blend_taps`). On a CPU those
steps cost about 0.5 ms a frame as separate array passes (more than half of decoding a 360p
frame), and they ran on the one thread that also feeds the network. Here they are one
compiled loop per frame (numba, no Python in the loop, the GIL released), run by each
decode thread on its own frames: about 0.07 ms a 360p frame and 0.13 ms a 720p frame, so
the host work scales with ``decode_workers``.

The numbers are the device path's to the bit (tested): the same integer YUV -> RGB
arithmetic as swscale's SSSE3 kernel (see :mod:`utils.video.decoders.yuv`), and the same float32
operations in the same order as :func:`preprocess.blend_taps` (``u8 / 255``, within each tap
row first, then between rows, then ``(x - mean) / std``; numba does not fuse or reorder
float operations unless asked to).
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from r21d_features.utils.video.decoders import Planes
from r21d_features.utils.video.decoders.yuv import YuvForm, swscale_coefficients

from .preprocess import CropTaps

_JIT = dict(nogil=True, boundscheck=False, error_model="numpy")


def _compiled(function):  # noqa: ANN001, ANN202
    """``numba.njit`` with the compiled code cached on disk (``__pycache__``, else numba's user
    cache folder); where neither is writable (a read-only install and home), compiled in each
    process instead of failing at import."""
    try:
        return numba.njit(cache=True, **_JIT)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(cache=False, **_JIT)(function)


@functools.lru_cache(maxsize=64)
def _coefficients(form: YuvForm) -> np.ndarray:
    return np.array(swscale_coefficients(form), dtype=np.int32)


class HostBlender:
    """The CPU preprocessing of one video's frames (one :class:`CropTaps`): :meth:`blend_into`."""

    def __init__(self, taps: CropTaps) -> None:
        self.rows, self.cols = taps.rows, taps.cols
        self.row_w, self.col_w, self.mean, self.std = (
            np.ascontiguousarray(t.numpy(), dtype=np.float32)
            for t in (taps.row_weights, taps.col_weights, taps.mean_rgb, taps.std_rgb))
        self.region_hwc = (self.row_w.shape[1], self.col_w.shape[1], 3)

    def blend_into(self, planes: Planes, out_hwc: np.ndarray) -> None:
        """One decoded frame -> its normalised region, written into ``out_hwc`` (``h x w x 3``
        float32, ``h x w`` the region of the taps); the device path's numbers to the bit."""
        if out_hwc.shape != self.region_hwc or out_hwc.dtype != np.float32:
            raise ValueError(f"region buffer {out_hwc.dtype} {tuple(out_hwc.shape)} does not fit the taps: "
                             f"expected float32 {self.region_hwc}")
        constants = (self.row_w, self.col_w, self.mean, self.std, out_hwc)
        if planes.yuv is None:
            _blend_rgb(planes.arrays[0], planes.bgr, self.rows, self.cols, *constants)
        else:
            y, u, v = planes.arrays
            _blend_yuv(y, u, v, self.rows, self.cols, planes.yuv.chroma_vshift, _coefficients(planes.yuv), *constants)


@_compiled
def _blend_rows(rgb_k3n, i, row_w, col_w, mean, std, out_hwc):  # noqa: ANN001, ANN202
    """Output row ``i`` from the RGB/255 values of its upper (k=0) and lower (k=1) tap rows."""
    w = out_hwc.shape[1]
    rw0, rw1 = row_w[0, i], row_w[1, i]
    row = np.empty((3, w), np.float32)  # per channel first (vectorises), then interleaved
    for ch in range(3):
        m, s = mean[ch], std[ch]
        upper, lower, out = rgb_k3n[0, ch], rgb_k3n[1, ch], row[ch]
        for j in range(w):
            cw0, cw1 = col_w[0, j], col_w[1, j]
            up = upper[j] * cw0 + upper[w + j] * cw1
            lo = lower[j] * cw0 + lower[w + j] * cw1
            out[j] = ((up * rw0 + lo * rw1) - m) / s
    out_row = out_hwc[i]
    for j in range(w):
        out_row[j, 0], out_row[j, 1], out_row[j, 2] = row[0, j], row[1, j], row[2, j]


@_compiled
def _blend_yuv(y, u, v, rows, cols, vshift, coeffs, row_w, col_w, mean, std, out_hwc):  # noqa: ANN001, ANN202
    y_offset, y_coeff, vr, ug, vg, ub = coeffs[0], coeffs[1], coeffs[2], coeffs[3], coeffs[4], coeffs[5]
    h, n = out_hwc.shape[0], 2 * out_hwc.shape[1]
    zero, eight, sixteen, c255, c1024 = np.int32(0), np.int32(8), np.int32(16), np.int32(255), np.int32(1024)
    ys, us, vs = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.int32)
    chroma_cols = cols >> 1
    rgb = np.empty((2, 3, n), np.float32)
    for i in range(h):
        for k in range(2):
            r = rows[k * h + i]
            y_row, u_row, v_row = y[r], u[r >> vshift], v[r >> vshift]
            for c in range(n):  # gather (kept apart so that the arithmetic below vectorises)
                ys[c] = y_row[cols[c]]
                us[c] = u_row[chroma_cols[c]]
                vs[c] = v_row[chroma_cols[c]]
            for c in range(n):  # int32 throughout, as swscale's 16-bit lanes never overflow it
                yc = ((ys[c] * eight - y_offset) * y_coeff) >> sixteen
                cu, cv = us[c] * eight - c1024, vs[c] * eight - c1024
                red = min(max(yc + ((cv * vr) >> sixteen), zero), c255)
                green = min(max(yc + ((cu * ug) >> sixteen) + ((cv * vg) >> sixteen), zero), c255)
                blue = min(max(yc + ((cu * ub) >> sixteen), zero), c255)
                rgb[k, 0, c] = np.float32(red) / np.float32(255.0)
                rgb[k, 1, c] = np.float32(green) / np.float32(255.0)
                rgb[k, 2, c] = np.float32(blue) / np.float32(255.0)
        _blend_rows(rgb, i, row_w, col_w, mean, std, out_hwc)


@_compiled
def _blend_rgb(frame_hwc, bgr, rows, cols, row_w, col_w, mean, std, out_hwc):  # noqa: ANN001, ANN202
    h, n = out_hwc.shape[0], 2 * out_hwc.shape[1]
    rgb = np.empty((2, 3, n), np.float32)
    for i in range(h):
        for k in range(2):
            row = frame_hwc[rows[k * h + i]]
            for c in range(n):
                for ch in range(3):
                    source = 2 - ch if bgr else ch  # OpenCV's frames are BGR
                    rgb[k, ch, c] = np.float32(row[cols[c], source]) / np.float32(255.0)
        _blend_rows(rgb, i, row_w, col_w, mean, std, out_hwc)

"""YUV -> RGB exactly as PyAV's ``frame.to_ndarray(format="rgb24")`` does it, for 8-bit 4:2:0 / 4:2:2.

PyAV (``VideoReformatter``) hands the frame to swscale (``sws_scale_frame``) with
``SWS_BILINEAR`` and the frame's own colorspace and range tags. For 8-bit 4:2:0 and
4:2:2 frames of even height, swscale takes its unscaled ``yuv2rgb`` shortcut: each RGB
pixel uses the chroma sample of its 2 x 2 (4:2:0) or 2 x 1 (4:2:2) block, with no
chroma interpolation, and on x86 the SSSE3 kernel (``libswscale/x86/yuv_2_rgb.asm``)
computes, in 16-bit lanes::

    yc = ((Y << 3) - y_offset) * y_coeff >> 16          # pmulhw: floor
    R  = sat_u8(yc + ((V << 3) - 1024) * vr_coeff >> 16)
    G  = sat_u8(yc + ((U << 3) - 1024) * ug_coeff >> 16 + ((V << 3) - 1024) * vg_coeff >> 16)
    B  = sat_u8(yc + ((U << 3) - 1024) * ub_coeff >> 16)

with the coefficients of ``ff_yuv2rgb_c_init_tables`` (``libswscale/yuv2rgb.c``):
BT.601 unless the frame is tagged BT.709 / FCC / SMPTE 240M / BT.2020, limited range
unless the frame says full (or its format is a ``yuvj`` one). R depends on (Y, V) only,
B on (Y, U), G on Y and one (U, V) term, so :func:`rgb_tables` turns the arithmetic into
lookup tables and :func:`yuv_taps_to_rgb` applies them on any device.

Odd heights, other CPUs (ARM's NEON kernel rounds differently) and other FFmpeg
builds may differ, so :func:`matches_swscale` checks the model against swscale on a
random frame of the same format, size and tags before it is trusted (once per
combination); where it does not match, the caller converts with swscale itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# ff_yuv2rgb_coeffs (libswscale/yuv2rgb.c): crv, cbu, cgu, cgv in 1/65536 units.
_BT601 = (104597, 132201, 25675, 53279)
_COEFFS_BY_COLORSPACE = {  # AVColorSpace -> coefficients; anything else is BT.601, as swscale does
    1: (117489, 138438, 13975, 34925),  # BT.709
    4: (104448, 132798, 24759, 53109),  # FCC
    7: (117579, 136230, 16907, 35559),  # SMPTE 240M
    9: (110013, 140363, 12277, 42626),  # BT.2020 non-constant luminance
    10: (110013, 140363, 12277, 42626),  # BT.2020 constant luminance
}
AVCOL_RANGE_MPEG, AVCOL_RANGE_JPEG = 1, 2
# The pixel format the CPU path lays YUV taps out in for swscale (see _swscale_taps).
_TAP_PIX_FMT = "yuv422p"
# Pixel formats whose 8-bit planes are gathered as YUV taps, and their chroma row shift.
YUV_FORMATS = {"yuv420p": 1, "yuvj420p": 1, "yuv422p": 0, "yuvj422p": 0}


@dataclass(frozen=True)
class YuvForm:
    """How the YUV taps of a frame become RGB: chroma row shift (1: 4:2:0, 0: 4:2:2),
    the AVColorSpace tag and whether the range is full (JPEG) rather than limited."""

    chroma_vshift: int
    colorspace: int
    full_range: bool


def yuv_form(pix_fmt: str, colorspace: int, color_range: int) -> YuvForm | None:
    """The :class:`YuvForm` of a frame, or None when its format is not gathered as YUV."""
    if pix_fmt not in YUV_FORMATS:
        return None
    return YuvForm(YUV_FORMATS[pix_fmt], int(colorspace), pix_fmt.startswith("yuvj") or color_range == AVCOL_RANGE_JPEG)


def _round_to_int16(f: int) -> int:
    r = (f + (1 << 15)) >> 16
    return max(-0x8000, min(0x7FFF, r))


def _c_div(a: int, b: int) -> int:
    """C's integer division (truncates towards zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@functools.lru_cache(maxsize=64)
def swscale_coefficients(form: YuvForm) -> tuple[int, int, int, int, int, int]:
    """``(y_offset, y_coeff, vr, ug, vg, ub)``: the int16 constants of swscale's SSSE3 kernel for ``form``."""
    crv, cbu, cgu, cgv = _COEFFS_BY_COLORSPACE.get(form.colorspace, _BT601)
    cgu, cgv = -cgu, -cgv
    cy, oy = 1 << 16, 0
    if form.full_range:
        crv, cbu, cgu, cgv = (_c_div(c * 224, 255) for c in (crv, cbu, cgu, cgv))
    else:
        cy, oy = (cy * 255) // 219, 16 << 16
    vr, ub, ug, vg = (_round_to_int16(c << 13) for c in (crv, cbu, cgu, cgv))
    return _round_to_int16(oy << 3), _round_to_int16(cy << 13), vr, ug, vg, ub


def yuv_to_rgb_numpy(y: np.ndarray, u: np.ndarray, v: np.ndarray, form: YuvForm) -> np.ndarray:
    """Full-resolution ``y``, ``u``, ``v`` (uint8, same shape) -> uint8 RGB ``... x 3`` (the model, on the host)."""
    y_offset, y_coeff, vr, ug, vg, ub = swscale_coefficients(form)
    y, u, v = (a.astype(np.int32) for a in (y, u, v))
    yc = ((y * 8 - y_offset) * y_coeff) >> 16
    u, v = u * 8 - 1024, v * 8 - 1024
    rgb = np.stack([yc + ((v * vr) >> 16), yc + ((u * ug) >> 16) + ((v * vg) >> 16), yc + ((u * ub) >> 16)], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class RgbTables:
    """Lookup tables of the conversion of one :class:`YuvForm`, all uint8 results:
    ``r[(Y << 8) | V]``, ``b[(Y << 8) | U]``, ``g[Y * g_span + uv[(U << 8) | V]]`` (``uv``: the
    green chroma term, shifted to start at 0, so G is one more lookup)."""

    r: np.ndarray
    b: np.ndarray
    g: np.ndarray
    uv: np.ndarray
    g_span: int


@functools.lru_cache(maxsize=64)
def rgb_tables(form: YuvForm) -> RgbTables:
    y_offset, y_coeff, vr, ug, vg, ub = swscale_coefficients(form)
    x = np.arange(256, dtype=np.int32)
    yc = ((x * 8 - y_offset) * y_coeff) >> 16
    c = x * 8 - 1024
    uv = ((c * ug) >> 16)[:, None] + ((c * vg) >> 16)[None, :]
    lo, span = int(uv.min()), int(uv.max() - uv.min() + 1)
    as_u8 = lambda a: np.clip(a, 0, 255).astype(np.uint8).ravel()  # noqa: E731
    return RgbTables(r=as_u8(yc[:, None] + ((c * vr) >> 16)[None, :]), b=as_u8(yc[:, None] + ((c * ub) >> 16)[None, :]),
                     g=as_u8(yc[:, None] + np.arange(lo, lo + span)[None, :]), uv=(uv - lo).astype(np.uint16).ravel(),
                     g_span=span)


def yuv_taps_to_rgb(taps_nhwc: torch.Tensor, form: YuvForm) -> torch.Tensor:
    """YUV taps ``N x H x W x 3`` uint8 (Y, U, V per tap) -> RGB taps, same shape, uint8, on their device.

    On a GPU: table lookups (:func:`rgb_tables`), so the result is swscale's to the bit.
    On the CPU: swscale itself, on the taps laid out as one 4:2:2 image (:func:`_swscale_taps`,
    0.2 ms a frame against 0.6-0.7 ms for numpy's lookups), where swscale's shortcut for that
    image size is the model (:func:`matches_swscale`); numpy's lookups otherwise.
    """
    import torch  # noqa: PLC0415 (torch only once frames are converted: a light start)

    if taps_nhwc.device.type == "cpu":
        yuv = taps_nhwc.numpy()
        n, h, w, _ = yuv.shape
        if n and _TAP_PIX_FMT and matches_swscale(_TAP_PIX_FMT, 2 * w, n * h, form.colorspace,
                                                  AVCOL_RANGE_JPEG if form.full_range else AVCOL_RANGE_MPEG):
            return torch.from_numpy(_swscale_taps(yuv, form))
        return torch.from_numpy(_lookup_numpy(yuv, rgb_tables(form)))
    return _lookup_torch(taps_nhwc, form)


def _swscale_taps(yuv: np.ndarray, form: YuvForm) -> np.ndarray:
    """YUV taps ``N x H x W x 3`` -> RGB by swscale: the taps become one ``2W x NH`` 4:2:2 frame in
    which tap ``(r, c)`` is luma pixels ``(r, 2c)`` and ``(r, 2c + 1)`` and their shared chroma
    sample, so swscale's unscaled shortcut pairs each luma tap with its own chroma, as the model
    does; every other output pixel is kept."""
    import av  # only PyAV's frames come here

    n, h, w, _ = yuv.shape
    frame = av.VideoFrame(2 * w, n * h, _TAP_PIX_FMT)
    luma, cb, cr = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes)
    # Each luma tap twice: as uint16 pairs, Y * 257 = (Y << 8) | Y (a 2-wide inner copy is 5x slower).
    np.multiply(yuv[..., 0], np.uint16(257), out=luma.view(np.uint16).reshape(n, h, w), casting="unsafe")
    np.copyto(cb.reshape(n, h, w), yuv[..., 1])
    np.copyto(cr.reshape(n, h, w), yuv[..., 2])
    frame.colorspace = form.colorspace
    frame.color_range = AVCOL_RANGE_JPEG if form.full_range else AVCOL_RANGE_MPEG
    return frame.to_ndarray(format="rgb24").reshape(n, h, w, 2, 3)[:, :, :, 0]


def _lookup_numpy(yuv: np.ndarray, t: RgbTables) -> np.ndarray:
    y, u, v = (yuv[..., i].astype(np.uint32) for i in range(3))
    out = np.empty_like(yuv)
    y_hi = y << 8
    out[..., 0] = t.r.take(y_hi | v)
    out[..., 1] = t.g.take(y * t.g_span + t.uv.take((u << 8) | v))
    out[..., 2] = t.b.take(y_hi | u)
    return out


@functools.lru_cache(maxsize=64)
def _device_tables(form: YuvForm, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(r, g, b, uv)`` of :func:`rgb_tables` on ``device``, copied there once (a copy per chunk
    would make the host wait for the device every chunk)."""
    import torch  # noqa: PLC0415 (torch only once frames are converted: a light start)

    t = rgb_tables(form)
    return tuple(torch.from_numpy(a).to(device) for a in (t.r, t.g, t.b, t.uv.astype(np.int64)))


def _lookup_torch(yuv: torch.Tensor, form: YuvForm) -> torch.Tensor:
    import torch  # noqa: PLC0415 (torch only once frames are converted: a light start)

    r, g, b, uv = _device_tables(form, yuv.device)
    t = rgb_tables(form)
    y, u, v = yuv.to(torch.int64).unbind(-1)
    y_hi = y << 8
    return torch.stack([r[y_hi | v], g[y * t.g_span + uv[(u << 8) | v]], b[y_hi | u]], dim=-1)


@functools.lru_cache(maxsize=64)
def matches_swscale(pix_fmt: str, width: int, height: int, colorspace: int, color_range: int) -> bool:
    """True when the model (:func:`yuv_to_rgb_numpy`) gives exactly what ``to_ndarray(format="rgb24")`` gives for frames of
    this format, size and tags (checked on one random frame; swscale refusing the tags is False)."""
    import av  # only the PyAV backend needs it

    form = yuv_form(pix_fmt, colorspace, color_range)
    if form is None:
        return False
    frame = av.VideoFrame(width, height, pix_fmt)
    rng = np.random.default_rng(width * 7919 + height)
    planes = []
    for plane in frame.planes:
        data = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        data[:] = rng.integers(0, 256, data.shape, dtype=np.uint8)
        planes.append(data[:, : plane.width])
    frame.colorspace, frame.color_range = colorspace, color_range
    try:
        want = frame.to_ndarray(format="rgb24")
    except av.FFmpegError:
        return False
    rows = np.arange(height)[:, None] >> form.chroma_vshift
    cols = np.arange(width)[None, :] >> 1
    got = yuv_to_rgb_numpy(planes[0], planes[1][rows, cols], planes[2][rows, cols], form)
    return bool(np.array_equal(got, want))

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
unless the frame says full (or its format is a ``yuvj`` one). Each term depends on one
of Y, U, V only, so the conversion is three 256-entry lookup tables per term and a sum:
:func:`rgb_luts` builds them, :func:`yuv_taps_to_rgb` applies them on any device.

Odd heights, other CPUs (ARM's NEON kernel rounds differently) and other FFmpeg
builds may differ, so :func:`matches_swscale` checks the model against swscale on a
random frame of the same format, size and tags before it is trusted (once per
combination); where it does not match, the caller converts with swscale itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
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
AVCOL_RANGE_JPEG = 2
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
def rgb_luts(form: YuvForm) -> np.ndarray:
    """``5 x 256`` int32 tables ``[yc(Y), vr(V), ug(U), vg(V), ub(U)]``: R = yc + vr, G = yc + ug + vg,
    B = yc + ub, each then clamped to 0..255 (swscale's SSSE3 arithmetic, see the module docstring)."""
    crv, cbu, cgu, cgv = _COEFFS_BY_COLORSPACE.get(form.colorspace, _BT601)
    cgu, cgv = -cgu, -cgv
    cy, oy = 1 << 16, 0
    if form.full_range:
        crv, cbu, cgu, cgv = (_c_div(c * 224, 255) for c in (crv, cbu, cgu, cgv))
    else:
        cy, oy = (cy * 255) // 219, 16 << 16
    y_coeff, y_offset = _round_to_int16(cy << 13), _round_to_int16(oy << 3)
    vr, ub, ug, vg = (_round_to_int16(c << 13) for c in (crv, cbu, cgu, cgv))
    x = np.arange(256, dtype=np.int64)
    chroma = np.clip(x * 8 - 1024, -32768, 32767)
    tables = [((x * 8 - y_offset) * y_coeff) >> 16, (chroma * vr) >> 16, (chroma * ug) >> 16,
              (chroma * vg) >> 16, (chroma * ub) >> 16]
    return np.stack(tables).astype(np.int32)


def yuv_to_rgb_numpy(y: np.ndarray, u: np.ndarray, v: np.ndarray, form: YuvForm) -> np.ndarray:
    """Full-resolution ``y``, ``u``, ``v`` (uint8, same shape) -> uint8 RGB ``... x 3`` (the model, on the host)."""
    yc, vr, ug, vg, ub = rgb_luts(form)
    yy = yc[y]
    return np.clip(np.stack([yy + vr[v], yy + ug[u] + vg[v], yy + ub[u]], axis=-1), 0, 255).astype(np.uint8)


def yuv_taps_to_rgb(taps_nhwc: torch.Tensor, luts: torch.Tensor) -> torch.Tensor:
    """YUV taps ``N x H x W x 3`` uint8 (Y, U, V per tap) -> RGB taps, same shape, uint8.

    ``luts``: :func:`rgb_luts` as an int32 tensor on the device of ``taps_nhwc``.
    """
    yuv = taps_nhwc.to(torch.int64)
    yc = luts[0][yuv[..., 0]]
    u, v = yuv[..., 1], yuv[..., 2]
    rgb = torch.stack([yc + luts[1][v], yc + luts[2][u] + luts[3][v], yc + luts[4][u]], dim=-1)
    return rgb.clamp_(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=64)
def matches_swscale(pix_fmt: str, width: int, height: int, colorspace: int, color_range: int) -> bool:
    """True when :func:`rgb_luts` gives exactly what ``to_ndarray(format="rgb24")`` gives for frames of
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

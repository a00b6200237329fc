"""Per-frame preprocessing (/255, bilinear resize to 128 x 171, normalise, centre crop), on any device.

The reference resizes the whole frame to 128 x 171 (bilinear, ``align_corners=False``)
and then keeps the centre 112 x 112. Each kept output pixel is a blend of a 2 x 2
neighbourhood of source pixels, so only those source rows and columns are needed:
at most 2 x 112 of each, whatever the frame size. The work is split in two:

- :func:`gather_taps` (host, uint8, no arithmetic): picks the needed rows and
  columns of a frame, ``H x W x 3`` -> ``224 x 224 x 3``. A 1080p frame shrinks 40x
  before any float conversion or host->device copy.
- :func:`blend_taps` (any device, float32): /255, the bilinear blend with the
  weights ``F.interpolate`` uses, and the per-channel normalisation.

Same numbers as the reference order (to float rounding, ~1e-7 relative), with a
cost that no longer grows with the frame size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from r21d_features.utils.video.decoders import Planes

from .zoo import Preprocessing


@dataclass(frozen=True)
class CropTaps:
    """Where the centre crop of the resized frame reads from a ``height x width`` frame.

    ``rows``/``cols``: int64 ``(2 * crop,)`` source indices, the first half the upper/left
    tap of each output row/column, the second half the lower/right tap.
    ``row_weights``/``col_weights``: float32 ``(2, crop)``, the weights of those taps;
    ``mean_rgb``/``std_rgb``: float32 ``(3,)``, the normalisation. Tensors live on one
    device (:meth:`to`), so blending never copies constants to the GPU.
    """

    rows: np.ndarray
    cols: np.ndarray
    row_weights: torch.Tensor
    col_weights: torch.Tensor
    mean_rgb: torch.Tensor
    std_rgb: torch.Tensor

    def to(self, device: torch.device | str) -> "CropTaps":
        # non_blocking: the host does not wait for these small copies (the model thread copies
        # them once per video and must never wait on the device).
        return replace(
            self, row_weights=self.row_weights.to(device, non_blocking=True),
            col_weights=self.col_weights.to(device, non_blocking=True),
            mean_rgb=self.mean_rgb.to(device, non_blocking=True), std_rgb=self.std_rgb.to(device, non_blocking=True),
        )


def _linear_taps(in_size: int, out_size: int, first: int, count: int) -> tuple[np.ndarray, torch.Tensor]:
    """Taps of outputs ``first..first+count-1`` of a 1-d linear resize ``in_size -> out_size``.

    Mirrors ATen's ``area_pixel_compute_source_index`` (``align_corners=False``, float32):
    ``src = max(0, (dst + 0.5) * in / out - 0.5)``, taps ``floor(src)`` and the next one
    (clamped to the edge), weights ``1 - frac`` and ``frac``.
    """
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    dst = torch.arange(first, first + count, dtype=torch.float32)
    src = (scale * (dst + 0.5) - 0.5).clamp_(min=0.0)
    lo = src.floor().to(torch.int64).clamp_(max=in_size - 1)
    hi = (lo + 1).clamp_(max=in_size - 1)
    frac = (src - lo.to(torch.float32)).clamp_(0.0, 1.0)
    return torch.cat([lo, hi]).numpy(), torch.stack([1.0 - frac, frac])


def crop_taps(height: int, width: int, spec: Preprocessing,
              region: tuple[int, int, int, int] | None = None) -> CropTaps:
    """The :class:`CropTaps` of a ``height x width`` frame under ``spec``.

    ``region``: ``(top, left, rows, cols)`` of the resized frame to compute; default the
    centre crop. Multi-crop asks for the bounding box of its crops (``models.r21d.crops``).
    """
    if height < 1 or width < 1:
        raise ValueError(f"frame size {height}x{width} is invalid: both sides must be >= 1 pixel")
    out_h, out_w = spec.resize_hw
    if region is None:
        (top, left), (crop_h, crop_w) = spec.crop_top_left, spec.crop_hw
    else:
        top, left, crop_h, crop_w = region
    rows, row_weights = _linear_taps(height, out_h, top, crop_h)
    cols, col_weights = _linear_taps(width, out_w, left, crop_w)
    mean, std = (torch.tensor(v, dtype=torch.float32) for v in (spec.mean_rgb, spec.std_rgb))
    return CropTaps(rows, cols, row_weights, col_weights, mean, std)


def gather_taps(frame_hwc: np.ndarray, taps: CropTaps) -> np.ndarray:
    """One uint8 RGB frame ``H x W x 3`` -> its taps ``2h x 2w x 3`` uint8 (``h x w``: the region, 112 x 112 by default)."""
    # Two 1-d takes (whole rows, then columns) beat one 2-d fancy index by 2x on HD frames.
    return frame_hwc.take(taps.rows, axis=0).take(taps.cols, axis=1)


def tap_columns(taps: CropTaps, bgr: bool = False) -> np.ndarray:
    """Flat indices into a frame row of ``W x 3`` bytes that pick the tap columns' pixels in RGB
    order: ``(2w * 3,)`` int64. With ``bgr`` the frame is BGR and the channels are reversed by
    the same gather, so no full-frame colour conversion is needed."""
    channels = np.array([2, 1, 0] if bgr else [0, 1, 2], dtype=np.int64)
    return (taps.cols[:, None] * 3 + channels).ravel()


def gather_taps_into(frame_hwc: np.ndarray, taps: CropTaps, columns: np.ndarray, out_hwc: np.ndarray) -> None:
    """Like :func:`gather_taps`, written into ``out_hwc`` (``2h x 2w x 3`` uint8, e.g. a row of a
    reused pinned buffer); ``columns`` from :func:`tap_columns` (which also sets the channel order)."""
    rows = frame_hwc.take(taps.rows, axis=0).reshape(len(taps.rows), -1)
    # mode="clip" writes into `out` directly (mode="raise" would go through a temporary).
    np.take(rows, columns, axis=1, out=out_hwc.reshape(len(taps.rows), -1), mode="clip")


def gather_planes(planes: Planes, taps: CropTaps) -> np.ndarray:
    """One decoded frame -> its taps ``2h x 2w x 3`` uint8: RGB, or (Y, U, V) when ``planes.yuv`` is set.
    See :func:`gather_planes_into`."""
    out = np.empty((len(taps.rows), len(taps.cols), 3), np.uint8)
    gather_planes_into(planes, taps, out)
    return out


def gather_planes_into(planes: Planes, taps: CropTaps, out_hwc: np.ndarray) -> None:
    """:func:`gather_planes` written straight into ``out_hwc`` (``2h x 2w x 3`` uint8, e.g. a row
    of a reused pinned buffer whose shape comes from ``taps``).

    For YUV frames each luma tap gets the chroma sample swscale would pair with it
    (row ``r >> chroma_vshift``, column ``c >> 1``), so the device can convert the taps
    to exactly the RGB a whole-frame conversion would give at those pixels.
    """
    if out_hwc.shape != (len(taps.rows), len(taps.cols), 3):
        raise ValueError(f"tap buffer {tuple(out_hwc.shape)} does not fit taps {len(taps.rows)}x{len(taps.cols)}x3")
    if planes.yuv is None:
        frame = planes.arrays[0]
        if frame.flags.c_contiguous and frame.ndim == 3 and frame.shape[2] == 3:
            gather_taps_into(frame, taps, tap_columns(taps, bgr=planes.bgr), out_hwc)
        else:
            out_hwc[...] = gather_taps(planes.rgb(), taps)
        return
    y, u, v = planes.arrays
    out_hwc[..., 0] = y.take(taps.rows, axis=0).take(taps.cols, axis=1)
    chroma_rows, chroma_cols = taps.rows >> planes.yuv.chroma_vshift, taps.cols >> 1
    out_hwc[..., 1] = u.take(chroma_rows, axis=0).take(chroma_cols, axis=1)
    out_hwc[..., 2] = v.take(chroma_rows, axis=0).take(chroma_cols, axis=1)


def blend_taps(taps_nhwc: torch.Tensor, taps: CropTaps) -> torch.Tensor:
    """Gathered taps ``N x 2h x 2w x 3`` uint8 -> the normalised region ``N x h x w x 3`` float32
    (channels last, the layout the pipeline keeps up to the network's channels-last clips).

    Runs on the device of ``taps_nhwc``, where ``taps`` must be too; ``h x w`` is the region
    of :func:`crop_taps` (the 112 x 112 centre crop by default).
    """
    if taps_nhwc.dtype != torch.uint8 or taps_nhwc.ndim != 4 or taps_nhwc.shape[-1] != 3:
        raise ValueError(f"expected uint8 taps N x H x W x 3, got {taps_nhwc.dtype} {tuple(taps_nhwc.shape)}")
    crop_h, crop_w = taps.row_weights.shape[1], taps.col_weights.shape[1]
    x = taps_nhwc.to(torch.float32).div_(255.0)
    row_w = taps.row_weights.view(2, 1, crop_h, 1, 1)
    col_w = taps.col_weights.view(2, 1, 1, crop_w, 1)
    upper, lower = x[:, :crop_h], x[:, crop_h:]
    # Within each row first, then between rows, as ATen's bilinear kernel sums.
    upper = upper[:, :, :crop_w] * col_w[0] + upper[:, :, crop_w:] * col_w[1]
    lower = lower[:, :, :crop_w] * col_w[0] + lower[:, :, crop_w:] * col_w[1]
    crops_nhwc = upper * row_w[0] + lower * row_w[1]
    return (crops_nhwc - taps.mean_rgb) / taps.std_rgb


def preprocess_frames(frames_nhwc: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """RGB uint8 frames ``N x H x W x 3`` -> normalised crops ``N x 3 x 112 x 112`` float32.

    The reference preprocessing for a batch of frames on any device: :func:`gather_taps` and
    :func:`blend_taps` in one call.
    """
    if frames_nhwc.dtype != torch.uint8 or frames_nhwc.ndim != 4 or frames_nhwc.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames N x H x W x 3, got {frames_nhwc.dtype} {tuple(frames_nhwc.shape)}"
        )
    taps = crop_taps(frames_nhwc.shape[1], frames_nhwc.shape[2], spec).to(frames_nhwc.device)
    rows = torch.from_numpy(taps.rows).to(frames_nhwc.device)
    cols = torch.from_numpy(taps.cols).to(frames_nhwc.device)
    return blend_taps(frames_nhwc[:, rows[:, None], cols[None, :]], taps).permute(0, 3, 1, 2).contiguous()

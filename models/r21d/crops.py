"""Multi-crop views of the resized frame: ``crops=center | five | ten`` (docs/guides/crops.md).

The crops are those of torchvision's ``five_crop`` / ``ten_crop`` of the 128 x 171
resized frame, 112 x 112 each, in their order::

    five:  0 top-left   1 top-right   2 bottom-left   3 bottom-right   4 centre
    ten:   0-4 as five, then 5-9 the same five of the horizontally flipped frame

    resized frame 128 x 171 (rows x cols)        top-left corner of each crop
    +-------------------------------+            TL (0, 0)    TR (0, 59)
    |TL         |    |           TR |            BL (16, 0)   BR (16, 59)
    |        +--+----+--+           |            centre (8, 30): round(59 / 2) = 30,
    |BL      |  centre  |        BR |                 as torchvision's center_crop
    +-------------------------------+

The centre of the *flipped* frame starts at column 30 of the flipped frame, i.e.
columns 29..140 of the original: it is not the mirror image of crop 4 (59 columns
of slack do not split evenly). Crop 4 is always the default ``center`` crop.

Only the bounding box of the rows and columns the chosen crops read is resized
(:func:`crop_region`): the centre crop alone for ``center``, the whole 128 x 171
frame for ``five``/``ten``. The crops are then slices of it on the device
(:func:`cut_crops`), a batch dimension for the network; the flip is done there too.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from .zoo import Preprocessing

CROP_CHOICES = ("center", "five", "ten")


@dataclass(frozen=True)
class CropBox:
    """One crop: its top-left corner in the resized frame (or in the flipped frame when ``flipped``)."""

    top: int
    left: int
    flipped: bool = False


def crop_boxes(crops: str, spec: Preprocessing) -> tuple[CropBox, ...]:
    """The crops of ``crops`` in torchvision's order (see the module docstring)."""
    (h, w), (ch, cw) = spec.resize_hw, spec.crop_hw
    centre = CropBox(*spec.crop_top_left)
    if crops == "center":
        return (centre,)
    five = (CropBox(0, 0), CropBox(0, w - cw), CropBox(h - ch, 0), CropBox(h - ch, w - cw), centre)
    if crops == "five":
        return five
    if crops == "ten":
        return five + tuple(CropBox(b.top, b.left, flipped=True) for b in five)
    raise ValueError(f"crops={crops!r} is unknown; allowed: {', '.join(CROP_CHOICES)}")


def centre_index(crops: str) -> int:
    """Index of the default centre crop among the crops of ``crops``."""
    return 0 if crops == "center" else 4


def crop_region(boxes: tuple[CropBox, ...], spec: Preprocessing) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the resized frame that ``boxes`` read (flipped crops
    mirrored back to original columns): the only part that needs resizing."""
    w = spec.resize_hw[1]
    ch, cw = spec.crop_hw
    lefts = [w - b.left - cw if b.flipped else b.left for b in boxes]
    top, left = min(b.top for b in boxes), min(lefts)
    bottom, right = max(b.top for b in boxes) + ch, max(lefts) + cw
    return top, left, bottom - top, right - left


def cut_crops(region_nhwc: torch.Tensor, boxes: tuple[CropBox, ...], spec: Preprocessing) -> torch.Tensor:
    """The resized region ``N x h x w x C`` (see :func:`crop_region`) -> crops ``N x K x 112 x 112 x C``.

    Runs on the region's device; a flipped crop is a crop of the region flipped left-right,
    as ``ten_crop`` flips the whole frame. Channels stay last: a clip in the network's
    channels-last layout is then one plain copy of a window.
    """
    import torch  # noqa: PLC0415 (torch only once frames are converted: a light start)

    top0, left0, _, region_w = crop_region(boxes, spec)
    ch, cw = spec.crop_hw
    frame_w = spec.resize_hw[1]
    if len(boxes) == 1 and not boxes[0].flipped:
        return region_nhwc.unsqueeze(1)  # the region is the crop
    flipped = region_nhwc.flip(2) if any(b.flipped for b in boxes) else None
    views = []
    for b in boxes:
        if b.flipped:
            # Column c of the flipped frame is column frame_w - 1 - c of the original; the
            # flipped region starts at original column left0 + region_w - 1.
            left = b.left - (frame_w - left0 - region_w)
            views.append(flipped[:, b.top - top0 : b.top - top0 + ch, left : left + cw])
        else:
            views.append(region_nhwc[:, b.top - top0 : b.top - top0 + ch, b.left - left0 : b.left - left0 + cw])
    return torch.stack(views, dim=1)

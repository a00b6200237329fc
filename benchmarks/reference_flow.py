"""The reference flow, restated: how the ``video_features`` R(2+1)D extractor turns a video into features.

Step for step what that extractor does, as its speed baseline:

1. decode the whole file as ``torchvision.io.read_video(path, pts_unit="sec")`` did (PyAV,
   every stream it holds, audio included; video frames ordered by their timestamps, each
   converted with ``frame.to_rgb().to_ndarray()``, stacked into one ``T x H x W x 3`` uint8
   tensor);
2. transform the whole clip at once: to float in [0, 1] (``C x T x H x W``), bilinear resize to
   128 x 171, normalise, centre crop 112 x 112;
3. one window per forward pass, in float32, through the network as torchvision builds it
   (BatchNorm kept, default memory layout), fed the strided slice
   ``clip[:, :, start:end]``; each output comes back with ``.tolist()``.

Memory grows with the video: about ``10 * T * H * W * 3`` bytes at the peak
(:func:`reference_peak_bytes`), which is why the benchmark skips it on long HD videos.

Written from the documented behaviour only (not from the product's pipeline). The tests'
oracle is ``tests/reference_oracle.py``, kept apart so that changing this baseline never
changes what the tests compare against.
"""

from __future__ import annotations

import av
import numpy as np
import torch
import torch.nn.functional as F

MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)
RESIZE_HW = (128, 171)
CROP_HW = (112, 112)


def read_video_rgb(path: str) -> torch.Tensor:
    """``T x H x W x 3`` uint8: the first video stream's frames as ``read_video`` returned them
    (audio decoded too, and dropped here, as the extractor drops it)."""
    frames: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        for stream in container.streams.audio[:1]:
            for _ in container.decode(stream):
                pass
        container.seek(0)
        for index, frame in enumerate(container.decode(video=0)):
            key = frame.pts if frame.pts is not None else index
            frames[key] = frame.to_rgb().to_ndarray()
    if not frames:
        return torch.empty((0, 1, 1, 3), dtype=torch.uint8)
    return torch.as_tensor(np.stack([frames[k] for k in sorted(frames)]))


def decode_all_rgb(path: str) -> np.ndarray:
    """Every frame of ``path``'s first video stream as one ``T x H x W x 3`` uint8 RGB array, as
    stored (no rotation), in presentation order."""
    return read_video_rgb(path).numpy()


def preprocess_clip(frames_thwc: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``T x H x W x 3`` uint8 -> ``3 x T x 112 x 112`` float32: /255, bilinear resize to 128 x 171,
    normalise, centre crop (the extractor's four transforms, in its order)."""
    video = torch.as_tensor(frames_thwc).permute(3, 0, 1, 2).to(torch.float32) / 255  # C T H W
    video = F.interpolate(video, size=RESIZE_HW, mode="bilinear", align_corners=False)
    video = (video - torch.as_tensor(MEAN).reshape(-1, 1, 1, 1)) / torch.as_tensor(STD).reshape(-1, 1, 1, 1)
    top = int(round((RESIZE_HW[0] - CROP_HW[0]) / 2.0))
    left = int(round((RESIZE_HW[1] - CROP_HW[1]) / 2.0))
    return video[..., top : top + CROP_HW[0], left : left + CROP_HW[1]]


@torch.no_grad()
def reference_features(network: torch.nn.Module, path: str, stack_size: int, step_size: int) -> np.ndarray:
    """``(num_windows, 512)`` float32; ``network`` must end at the pooled features (fc = Identity).

    One window per forward pass: each goes to the network's device on its own and comes back
    as a Python list, as in the reference extractor.
    """
    device = next(network.parameters()).device
    clip = preprocess_clip(read_video_rgb(path)).unsqueeze(0)  # 1 x C x T x H x W
    num_frames = clip.shape[2]
    feats: list[list[float]] = []
    for start in range(0, num_frames - stack_size + 1, step_size):
        output = network(clip[:, :, start : start + stack_size].to(device))
        feats.extend(output.tolist())
    return np.array(feats, dtype=np.float32) if feats else np.zeros((0, 512), np.float32)


def reference_peak_bytes(num_frames: int, height: int, width: int) -> int:
    """Rough peak host memory of :func:`reference_features` on such a video (frames, stack, 2 float copies)."""
    return 10 * num_frames * height * width * 3

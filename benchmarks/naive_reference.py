"""The naive reference mode: the reference preprocessing done the straightforward way, like ``video_features``.

Whole video decoded into RAM with PyAV (every frame FFmpeg presents, converted with
``frame.to_ndarray(format="rgb24")`` as the reference does), converted to float32, resized on the CPU with
``F.interpolate``, normalised and cropped, then one window per forward pass in float32.
Written from the documented behaviour only (not from the product's pipeline), it is the speed baseline of
``benchmarks/run_benchmark.py``; the tests' oracle is ``tests/reference_oracle.py``, kept apart
so that speeding up this baseline never changes what the tests compare against.

Memory grows with the video: about ``10 * T * H * W * 3`` bytes at the peak
(:func:`naive_peak_bytes`), which is why the benchmark skips it on long HD videos.
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


def decode_all_rgb(path: str) -> np.ndarray:
    """Every frame of ``path``'s first video stream as one ``T x H x W x 3`` uint8 RGB array, as stored
    (no rotation), converted by PyAV's default ``to_ndarray(format="rgb24")``."""
    with open(path, "rb") as f, av.open(f) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return np.stack(frames)


def preprocess_clip(frames_thwc: np.ndarray) -> torch.Tensor:
    """T x H x W x 3 uint8 -> 3 x T x 112 x 112 float32: /255, bilinear resize to 128 x 171, normalise, centre crop."""
    video = torch.from_numpy(frames_thwc).permute(3, 0, 1, 2).to(torch.float32) / 255  # C T H W
    video = F.interpolate(video, size=RESIZE_HW, mode="bilinear", align_corners=False)
    video = (video - torch.tensor(MEAN).view(3, 1, 1, 1)) / torch.tensor(STD).view(3, 1, 1, 1)
    top = int(round((RESIZE_HW[0] - CROP_HW[0]) / 2.0))
    left = int(round((RESIZE_HW[1] - CROP_HW[1]) / 2.0))
    return video[:, :, top : top + CROP_HW[0], left : left + CROP_HW[1]]


@torch.no_grad()
def naive_features(network: torch.nn.Module, path: str, stack_size: int, step_size: int) -> np.ndarray:
    """(num_windows, 512) float32; ``network`` must end at the pooled features (fc = Identity).

    Windows go to the network's device one at a time and come back one at a time.
    """
    device = next(network.parameters()).device
    video = preprocess_clip(decode_all_rgb(path))
    num_frames = video.shape[1]
    feats = []
    start = 0
    while start + stack_size <= num_frames:
        clip = video[:, start : start + stack_size].unsqueeze(0).to(device)
        feats.append(network(clip)[0].cpu().numpy())
        start += step_size
    return np.stack(feats).astype(np.float32) if feats else np.zeros((0, 512), np.float32)


def naive_peak_bytes(num_frames: int, height: int, width: int) -> int:
    """Rough peak host memory of :func:`naive_features` on such a video (frames, stack, 2 float copies)."""
    return 10 * num_frames * height * width * 3

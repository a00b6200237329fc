"""A deliberately naive oracle, written from SPEC §3-§4 only (not from the product code).

Whole clip in memory, float32 on the CPU, one window per forward pass.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


def decode_all_rgb(path: str) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[:, :, ::-1].copy())
    cap.release()
    return np.stack(frames)


def preprocess_clip(frames_thwc: np.ndarray) -> torch.Tensor:
    """T x H x W x 3 uint8 -> 3 x T x 112 x 112 float32, in the order SPEC §3 gives."""
    video = torch.from_numpy(frames_thwc).permute(3, 0, 1, 2).to(torch.float32) / 255  # C T H W
    video = F.interpolate(video, size=(128, 171), mode="bilinear", align_corners=False)
    video = (video - torch.tensor(MEAN).view(3, 1, 1, 1)) / torch.tensor(STD).view(3, 1, 1, 1)
    return video[:, :, 8:120, 30:142]


@torch.no_grad()
def naive_features(network: torch.nn.Module, path: str, stack_size: int, step_size: int) -> np.ndarray:
    """(num_windows, 512) float32; ``network`` must end at the pooled features (fc = Identity)."""
    video = preprocess_clip(decode_all_rgb(path))
    num_frames = video.shape[1]
    feats = []
    start = 0
    while start + stack_size <= num_frames:
        feats.append(network(video[:, start : start + stack_size].unsqueeze(0))[0].numpy())
        start += step_size
    return np.stack(feats).astype(np.float32) if feats else np.zeros((0, 512), np.float32)

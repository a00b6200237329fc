"""The test oracle: the documented architecture, preprocessing, windows and prediction format written out naively, sharing no code with the product.

Nothing here imports ``models``, ``utils``, ``configs`` or ``benchmarks``: the networks come
from torchvision (``r2plus1d_18``) and from :func:`r2plus1d_34`, written from the documented architecture;
frames come from PyAV (``frame.to_ndarray(format="rgb24")``, as the reference decodes);
preprocessing, windows and flavour defaults are this module's own. The whole clip is held in
memory and every window is its own float32 forward pass through an unfolded (BatchNorm kept),
NCDHW network, so that a bug in the product's fast path or builders is never in both.

Speed does not matter here; ``benchmarks/reference_flow.py`` (the benchmark's speed baseline)
is a different module on purpose.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.video import R2Plus1D_18_Weights, r2plus1d_18
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

# The documented preprocessing constants (docs/reference/preprocessing.md), not the product's zoo.
MEAN_RGB = (0.43216, 0.394666, 0.37645)
STD_RGB = (0.22803, 0.22145, 0.216989)
RESIZE_HW = (128, 171)
CROP_ROWS = (8, 120)  # rows 8..119
CROP_COLS = (30, 142)  # columns 30..141
NUM_CLASSES = 400
FEATURE_DIM = 512


@dataclass(frozen=True)
class Flavour:
    architecture: str
    stack_size: int
    step_size: int


# The documented flavours: model_name -> architecture and default stack/step.
FLAVOURS = {
    "r2plus1d_18_16_kinetics": Flavour("r2plus1d_18", 16, 16),
    "r2plus1d_34_32_ig65m_ft_kinetics": Flavour("r2plus1d_34", 32, 32),
    "r2plus1d_34_8_ig65m_ft_kinetics": Flavour("r2plus1d_34", 8, 8),
}


def kinetics_labels() -> list[str]:
    """The 400 class names, straight from torchvision's metadata."""
    return list(R2Plus1D_18_Weights.KINETICS400_V1.meta["categories"])


# ---------------------------------------------------------------------------- networks

class _Caffe2BasicBlock(BasicBlock):
    """torchvision's BasicBlock whose ``conv2`` takes its mid-planes from ``planes -> planes``.

    torchvision computes one mid-plane count per block from ``inplanes -> planes`` and uses
    it for both convs; the Caffe2 models compute conv2's from its own in/out (``planes``),
    which is 288 / 576 / 1152 in the first block of layers 2-4 (as documented) and the same as
    torchvision's everywhere else.
    """

    def __init__(self, inplanes, planes, conv_builder, stride=1, downsample=None):
        super().__init__(inplanes, planes, conv_builder, stride, downsample)
        midplanes = (planes * planes * 3 * 3 * 3) // (planes * 3 * 3 + 3 * planes)
        self.conv2 = nn.Sequential(conv_builder(planes, planes, midplanes), nn.BatchNorm3d(planes))


def r2plus1d_34(num_classes: int = NUM_CLASSES) -> VideoResNet:
    """R(2+1)D-34 as documented: VideoResNet, Conv2Plus1D x 4, layers [3, 4, 6, 3], R(2+1)D stem,
    Caffe2 mid-planes in conv2, every BatchNorm3d eps=1e-3 / momentum=0.9. Random init."""
    model = VideoResNet(block=_Caffe2BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3],
                        stem=R2Plus1dStem, num_classes=num_classes)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps, module.momentum = 1e-3, 0.9
    # The documented numbers, checked here so a formula slip cannot hide.
    got = [getattr(model, f"layer{i}")[0].conv2[0][0].out_channels for i in (2, 3, 4)]
    assert got == [288, 576, 1152], got
    return model


def build_network(model_name: str) -> VideoResNet:
    """A randomly initialised network of ``model_name``'s architecture (400-way ``fc``)."""
    arch = FLAVOURS[model_name].architecture
    return r2plus1d_18(weights=None, num_classes=NUM_CLASSES) if arch == "r2plus1d_18" else r2plus1d_34()


def randomise(network: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights with trained-looking BatchNorms (weight, bias, running stats all
    random), so a product that folds BatchNorm into the convolutions must fold all four."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.05)
            elif isinstance(module, nn.BatchNorm3d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_((torch.rand(n, generator=gen) - 0.5) * 0.4)
                module.running_mean.copy_((torch.rand(n, generator=gen) - 0.5) * 0.2)
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return network


def make_checkpoint(path: Path, model_name: str, seed: int = 1234, fc_bias: np.ndarray | None = None) -> Path:
    """Saves a random state dict of ``model_name``'s architecture in the upstream format.

    ``fc_bias``: if given, ``fc`` becomes ``weight = 0, bias = fc_bias``, so every window's
    logits are exactly ``fc_bias`` whatever the features (for testing the printed predictions).
    """
    network = randomise(build_network(model_name), seed)
    if fc_bias is not None:
        with torch.no_grad():
            network.fc.weight.zero_()
            network.fc.bias.copy_(torch.as_tensor(fc_bias, dtype=torch.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path


@functools.lru_cache(maxsize=4)
def load_network(model_name: str, checkpoint: Path) -> tuple[nn.Module, nn.Linear]:
    """``(backbone ending at the pooled 512-d features, fc)``, eval mode, float32, cpu (cached:
    checkpoints are written once per session and the modules are only run, never changed)."""
    network = build_network(model_name)
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
    fc = network.fc
    network.fc = nn.Identity()
    return network.eval(), fc.eval()


# ---------------------------------------------------------------------------- frames

def decode_rgb24(path: str | Path) -> np.ndarray:
    """Every frame of the first video stream, ``T x H x W x 3`` uint8 RGB, via PyAV, as the reference decodes.

    Skips the calling test when PyAV is not installed.
    """
    av = pytest.importorskip("av", reason="the oracle decodes with PyAV, as the reference does (pip install av)")
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not frames:
        return np.zeros((0, 1, 1, 3), np.uint8)
    return np.stack(frames)


def preprocess(frames_thwc: np.ndarray) -> torch.Tensor:
    """/255, resize, normalise, crop: ``T x H x W x 3`` uint8 -> ``3 x T x 112 x 112`` float32, one frame at a time."""
    mean = torch.tensor(MEAN_RGB).view(3, 1, 1)
    std = torch.tensor(STD_RGB).view(3, 1, 1)
    out = []
    for frame in frames_thwc:
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255.0  # 3 x H x W
        x = F.interpolate(x[None], size=RESIZE_HW, mode="bilinear", align_corners=False)[0]
        x = (x - mean) / std
        out.append(x[:, CROP_ROWS[0]:CROP_ROWS[1], CROP_COLS[0]:CROP_COLS[1]])
    return torch.stack(out, dim=1)


def windows(num_frames: int, stack_size: int, step_size: int) -> list[tuple[int, int]]:
    """The windows: ``[(start, end_exclusive), ...]``, counted by walking, not by the formula."""
    bounds, start = [], 0
    while start + stack_size <= num_frames:
        bounds.append((start, start + stack_size))
        start += step_size
    assert len(bounds) == max(0, (num_frames - stack_size) // step_size + 1)
    return bounds


@dataclass
class Reference:
    features: np.ndarray  # (num_windows, 512) float32
    logits: np.ndarray  # (num_windows, 400) float32
    window_bounds: list[tuple[int, int]]
    num_frames: int


@torch.no_grad()
def reference(model_name: str, checkpoint: Path, video: str | Path, stack_size: int | None = None,
              step_size: int | None = None, frames_thwc: np.ndarray | None = None) -> Reference:
    """What the reference computes for ``video`` (or for already decoded ``frames_thwc``)."""
    flavour = FLAVOURS[model_name]
    stack = flavour.stack_size if stack_size is None else stack_size
    step = flavour.step_size if step_size is None else step_size
    frames = decode_rgb24(video) if frames_thwc is None else frames_thwc
    backbone, fc = load_network(model_name, Path(checkpoint))
    bounds = windows(len(frames), stack, step)
    feats, logits = [], []
    for start, end in bounds:
        clip = preprocess(frames[start:end])  # per frame, so only the window's frames are needed
        f = backbone(clip[None])  # 1 x 3 x S x 112 x 112
        feats.append(f[0].numpy())
        logits.append(fc(f)[0].numpy())
    return Reference(
        features=np.stack(feats).astype(np.float32) if feats else np.zeros((0, FEATURE_DIM), np.float32),
        logits=np.stack(logits).astype(np.float32) if logits else np.zeros((0, NUM_CLASSES), np.float32),
        window_bounds=bounds,
        num_frames=len(frames),
    )


def top5(logits_row: np.ndarray, labels: list[str]) -> list[tuple[str, float, float]]:
    """The show_pred rows: ``[(label, logit, probability), ...]`` best first; softmax over all classes."""
    z = np.asarray(logits_row, np.float64)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    best = sorted(range(len(z)), key=lambda i: -z[i])[:5]
    return [(labels[i], float(z[i]), float(probs[i])) for i in best]


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """``max |got - want| / max |want|``."""
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(float(np.abs(want).max()), 1e-12))


# ---------------------------------------------------------------------------- test inputs

def ffmpeg_exe() -> str:
    """An ffmpeg binary: ``$PATH`` first, else imageio-ffmpeg's (skips the test when neither exists)."""
    import shutil

    found = shutil.which("ffmpeg")
    if found:
        return found
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="no ffmpeg on PATH and no imageio-ffmpeg")
    return imageio_ffmpeg.get_ffmpeg_exe()


# Encodings whose decoded RGB is the same with PyAV and with OpenCV (measured: bit-identical),
# so a 1e-5 comparison holds whichever of the two the product decodes with.
LOSSLESS_RGB = ("-c:v", "ffv1", "-pix_fmt", "bgr0")  # exact: decoded frames == the frames written
YUV444_8BIT = ("-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv444p")
YUV444_10BIT = ("-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv444p10le")
GRAY_8BIT = ("-c:v", "ffv1", "-pix_fmt", "gray")
# 10-bit 4:2:0: FFmpeg's chroma upsampling depends on the caller's swscale flags, so PyAV and
# OpenCV give different RGB (up to 10/255 on colour edges; measured 2024 FFmpeg 7).
YUV420_10BIT = ("-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p10le")


def write_video(path: Path, frames_thwc: np.ndarray, fps: float = 25.0, codec_args=LOSSLESS_RGB) -> Path:
    """Encodes ``T x H x W x 3`` uint8 RGB frames with ffmpeg (raw frames on stdin)."""
    import subprocess

    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames_thwc.shape
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                    "-r", str(fps), "-i", "-", *codec_args, str(path)],
                   input=np.ascontiguousarray(frames_thwc).tobytes(), check=True, timeout=120)
    return path


def test_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``T x H x W x 3`` uint8: gradients, per-pixel noise and a moving block (every pixel matters)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for t in range(num_frames):
        frame = np.stack([xx * 255 / max(width - 1, 1), yy * 255 / max(height - 1, 1),
                          (xx + yy + 9 * t) % 256], axis=-1)
        frame += rng.normal(0, 25, frame.shape)
        s = max(2, min(height, width) // 3)
        top, left = (3 * t) % max(1, height - s), (5 * t) % max(1, width - s)
        frame[top:top + s, left:left + s] = (250, 40, 20)
        out.append(frame.clip(0, 255).astype(np.uint8))
    return np.stack(out)


test_frames.__test__ = False  # a helper, not a pytest test

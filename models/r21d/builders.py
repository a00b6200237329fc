"""Network builders for the zoo's architectures, from torchvision blocks."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
from torchvision.models.video.resnet import (
    BasicBlock,
    Conv2Plus1D,
    R2Plus1dStem,
    VideoResNet,
    r2plus1d_18,
)

from .zoo import ModelRecord

# Mid-planes of the Caffe2-trained R(2+1)D-34's first conv2 in layers 2-4. They
# differ from torchvision's formula (facebookresearch/VMZ#89, pytorch/vision#1265).
R2PLUS1D_34_FIRST_CONV2_MIDPLANES = {"layer2": 288, "layer3": 576, "layer4": 1152}
R2PLUS1D_34_BN_EPS = 1e-3
R2PLUS1D_34_BN_MOMENTUM = 0.9


def build_r2plus1d_18(num_classes: int) -> VideoResNet:
    """torchvision's R(2+1)D-18, randomly initialised."""
    return r2plus1d_18(weights=None, num_classes=num_classes)


def build_r2plus1d_34(num_classes: int) -> VideoResNet:
    """R(2+1)D-34 with the layout of the IG65M (Caffe2) checkpoints, randomly initialised.

    torchvision's ``VideoResNet`` with ``BasicBlock``/``Conv2Plus1D``, layers
    ``[3, 4, 6, 3]``, the R(2+1)D stem; the first block of layers 2-4 gets the
    Caffe2 mid-planes and every BatchNorm3d eps=1e-3 / momentum=0.9.
    """
    model = VideoResNet(
        block=BasicBlock,
        conv_makers=[Conv2Plus1D] * 4,
        layers=[3, 4, 6, 3],
        stem=R2Plus1dStem,
        num_classes=num_classes,
    )
    for layer_name, midplanes in R2PLUS1D_34_FIRST_CONV2_MIDPLANES.items():
        block = getattr(model, layer_name)[0]
        planes = block.conv2[0][0].in_channels
        block.conv2[0] = Conv2Plus1D(planes, planes, midplanes)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps = R2PLUS1D_34_BN_EPS
            module.momentum = R2PLUS1D_34_BN_MOMENTUM
    return model


ARCHITECTURES: dict[str, Callable[[int], VideoResNet]] = {
    "r2plus1d_18": build_r2plus1d_18,
    "r2plus1d_34": build_r2plus1d_34,
}


def build_network(record: ModelRecord) -> VideoResNet:
    """A randomly initialised network with the shape ``record`` describes."""
    model = ARCHITECTURES[record.architecture](record.num_classes)
    if model.fc.in_features != record.feature_dim:
        raise ValueError(
            f"{record.name}: architecture {record.architecture} has {model.fc.in_features}-d "
            f"features but the record says feature_dim={record.feature_dim}"
        )
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` (in eval mode) with every BatchNorm folded into the conv before it.

    Each conv's weights and bias absorb the BatchNorm's scale and shift (torch.fx's
    conv/bn fusion), which saves a pass over every activation map; outputs agree with
    ``model`` to float rounding (~1e-6 relative).
    """
    return fuse(model.eval())


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file and the mismatch."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ValueError(
            f"weights file {source} does not fit this model ({detail[:400]}); "
            "check that model_name matches the checkpoint"
        ) from None

"""Network builders for the zoo's architectures, from torchvision blocks.

:func:`build_model` is the one entry point: a zoo record and a weights choice in,
the ready inference network and its classifier out (in the shape of
torchvision's ``_video_resnet``: build the architecture, then load the weights).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
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

from r21d_features.utils.core.errors import SettingsError

from .weights import load_state_dict, resolve_checkpoint, sha256_of
from .zoo import ModelRecord

log = logging.getLogger(__name__)

# Mid-planes of the Caffe2-trained R(2+1)D-34's first conv2 in layers 2-4. They
# differ from torchvision's formula (facebookresearch/VMZ#89, pytorch/vision#1265).
R2PLUS1D_34_FIRST_CONV2_MIDPLANES = {"layer2": 288, "layer3": 576, "layer4": 1152}
R2PLUS1D_34_BN_EPS = 1e-3
R2PLUS1D_34_BN_MOMENTUM = 0.9
# random_weights=true is this seeded network, the same in every process (workers, shards, reruns).
RANDOM_WEIGHTS_SEED = 0


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


def check_finite_weights(state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a checkpoint holding NaN or Inf: every feature it gives would be garbage."""
    for key, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise SettingsError(
                f"weights file {source} holds {bad} NaN/Inf values in {key!r}: the file is corrupt or not "
                "trained weights; download it again, or give another checkpoint_path"
            )


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file and the mismatch;
    non-finite values are refused."""
    check_finite_weights(state_dict, source)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise SettingsError(
            f"weights file {source} does not fit this model ({detail[:400]}); "
            "check that model_name matches the checkpoint"
        ) from None


@dataclass(frozen=True)
class ReadyModel:
    """A flavour ready for inference.

    ``network``: clips ``B x 3 x T x 112 x 112`` -> features ``B x feature_dim`` (eval mode,
    BatchNorm folded, ``fc`` replaced by identity); ``classifier``: the ``fc`` kept aside,
    features -> logits ``B x num_classes``; ``weights_source``: the file loaded, or "random";
    ``weights_id``: what the weights are, for provenance: ``sha256:<hex>`` of the file, or "random".
    """

    network: nn.Module
    classifier: nn.Linear
    weights_source: str
    weights_id: str


def build_model(
    record: ModelRecord,
    checkpoint_path: str | os.PathLike | None = None,
    random_weights: bool = False,
    device: torch.device | str = "cpu",
    channels_last: bool = True,
) -> ReadyModel:
    """The network of ``record`` with its weights, on ``device``.

    Weights: ``checkpoint_path`` when given, else the upstream file (torch hub cache,
    downloaded with its hash check; see :mod:`models.r21d.weights`); ``random_weights``:
    a fixed-seed random network (warned about: its features mean nothing).
    ``channels_last``: the ``channels_last_3d`` layout, which the fast CPU and GPU kernels use.
    """
    if random_weights and checkpoint_path is not None:
        raise SettingsError("random_weights=true and checkpoint_path are exclusive: drop one of them")
    # Seeded without touching the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        network = build_network(record)
    if random_weights:
        log.warning(
            "random_weights=true: %s has RANDOM weights; these features are meaningless "
            "(for tests and benchmarks only)", record.name
        )
        source = weights_id = "random"
    else:
        path = resolve_checkpoint(record, checkpoint_path)
        load_weights(network, load_state_dict(path), source=str(path))
        source, weights_id = str(path), f"sha256:{sha256_of(path)}"
    classifier: nn.Linear = network.fc
    network.fc = nn.Identity()
    network = fold_batchnorm(network).to(device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    return ReadyModel(network=network, classifier=classifier.eval().to(device), weights_source=source,
                      weights_id=weights_id)

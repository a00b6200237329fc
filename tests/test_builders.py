"""The model tree must accept the upstream checkpoints' keys and shapes with strict=True."""

import pytest
import torch
from torch import nn
from torchvision.models.video import r2plus1d_18
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

from r21d_features.models.r21d.builders import build_network, load_weights
from r21d_features.models.r21d.zoo import MODEL_ZOO, get_record


def upstream_ig65m_r2plus1d_34_state_dict() -> dict:
    """Key names and shapes of moabitcoin/ig65m-pytorch's R(2+1)D-34, built the way that repo does."""
    model = VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem)
    model.fc = nn.Linear(model.fc.in_features, out_features=400)
    model.layer2[0].conv2[0] = Conv2Plus1D(128, 128, 288)
    model.layer3[0].conv2[0] = Conv2Plus1D(256, 256, 576)
    model.layer4[0].conv2[0] = Conv2Plus1D(512, 512, 1152)
    return model.state_dict()


@pytest.mark.parametrize("name", ["r2plus1d_34_32_ig65m_ft_kinetics", "r2plus1d_34_8_ig65m_ft_kinetics"])
def test_r2plus1d_34_loads_upstream_layout_strictly(name):
    upstream = upstream_ig65m_r2plus1d_34_state_dict()
    net = build_network(get_record(name))
    ours = net.state_dict()
    assert set(ours) == set(upstream)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in upstream.items()}
    load_weights(net, upstream, source="upstream-layout")  # strict=True inside
    assert torch.equal(net.state_dict()["layer4.0.conv2.0.0.weight"], upstream["layer4.0.conv2.0.0.weight"])


def test_r2plus1d_34_caffe2_details():
    net = build_network(get_record("r2plus1d_34_32_ig65m_ft_kinetics"))
    for layer, mid in (("layer2", 288), ("layer3", 576), ("layer4", 1152)):
        conv = getattr(net, layer)[0].conv2[0]
        assert conv[0].out_channels == mid and conv[3].in_channels == mid
    # the other blocks keep torchvision's formula
    assert net.layer2[1].conv2[0][0].out_channels == (128 * 128 * 3 * 3 * 3) // (128 * 3 * 3 + 3 * 128)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm3d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.9 for m in bns)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert net.fc.in_features == 512 and net.fc.out_features == 400


def test_r2plus1d_18_is_torchvisions():
    ours = build_network(get_record("r2plus1d_18_16_kinetics")).state_dict()
    theirs = r2plus1d_18(weights=None).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    bns = [m for m in build_network(get_record("r2plus1d_18_16_kinetics")).modules() if isinstance(m, nn.BatchNorm3d)]
    assert all(m.eps == 1e-5 for m in bns)


def test_wrong_checkpoint_for_the_model_is_refused_with_a_clear_message():
    net = build_network(get_record("r2plus1d_18_16_kinetics"))
    with pytest.raises(ValueError, match="does not fit this model.*model_name"):
        load_weights(net, upstream_ig65m_r2plus1d_34_state_dict(), source="r34.pth")


def test_zoo_records():
    assert set(MODEL_ZOO) == {
        "r2plus1d_18_16_kinetics", "r2plus1d_34_32_ig65m_ft_kinetics", "r2plus1d_34_8_ig65m_ft_kinetics"
    }
    assert [(r.stack_size, r.step_size) for r in MODEL_ZOO.values()] == [(16, 16), (32, 32), (8, 8)]
    assert [r.file_name for r in MODEL_ZOO.values()] == [  # the upstream names, which the hub cache uses
        "r2plus1d_18-91a641e6.pth",
        "r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth",
        "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth",
    ]
    assert MODEL_ZOO["r2plus1d_34_8_ig65m_ft_kinetics"].url == (
        "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0/"
        "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth"
    )
    for record in MODEL_ZOO.values():
        assert record.file_name.split("-")[-1] == f"{record.sha256_prefix}.pth"
        assert record.url.endswith("/" + record.file_name)
        labels = record.labels()
        assert len(labels) == 400 and labels[0] == "abseiling"
    with pytest.raises(ValueError, match="r2plus1d_18_16_kinetics"):
        get_record("r3d_18")

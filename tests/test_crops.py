"""crops=five|ten: torchvision's five_crop/ten_crop of the resized frame, against an independent oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from benchmarks.reference_flow import CROP_HW, MEAN, STD, RESIZE_HW, decode_all_rgb
from r21d_features.models.r21d import R21DExtractor, R21DSettings
from r21d_features.models.r21d.host_blend import HostBlender
from r21d_features.models.r21d.crops import crop_boxes, crop_region, cut_crops
from r21d_features.models.r21d.zoo import get_record
from tests.helpers import rel_err
from tests.reference_oracle import load_network
from r21d_features.utils.core.errors import SettingsError

R18 = "r2plus1d_18_16_kinetics"
SPEC = get_record(R18).preprocessing


def reference_multicrop_features(network: torch.nn.Module, path: str, stack: int, step: int, crops: str) -> np.ndarray:
    """(num_windows, num_crops, 512): whole video resized in float32, torchvision's crops of it,
    one window (its crops as a batch) per forward pass."""
    video = torch.from_numpy(decode_all_rgb(path)).permute(3, 0, 1, 2).float() / 255  # C T H W
    video = torch.nn.functional.interpolate(video, size=RESIZE_HW, mode="bilinear", align_corners=False)
    video = (video - torch.tensor(MEAN).view(3, 1, 1, 1)) / torch.tensor(STD).view(3, 1, 1, 1)
    views = TF.five_crop(video, list(CROP_HW)) if crops == "five" else TF.ten_crop(video, list(CROP_HW))
    out = []
    with torch.no_grad():
        for start in range(0, video.shape[1] - stack + 1, step):
            out.append(network(torch.stack([v[:, start : start + stack] for v in views])).numpy())
    return np.asarray(out, dtype=np.float32)


def test_crop_positions_and_order_are_torchvisions():
    # Every pixel of the resized frame holds its own position, so any shifted, swapped or
    # unflipped crop differs.
    rows, cols = torch.meshgrid(torch.arange(128.0), torch.arange(171.0), indexing="ij")
    frame = torch.stack([rows, cols, rows * 1000 + cols]).unsqueeze(0)  # 1 x 3 x 128 x 171
    for crops, reference in (("five", TF.five_crop), ("ten", TF.ten_crop)):
        boxes = crop_boxes(crops, SPEC)
        assert crop_region(boxes, SPEC) == (0, 0, 128, 171)
        got = cut_crops(frame.permute(0, 2, 3, 1), boxes, SPEC)[0].permute(0, 3, 1, 2)
        want = torch.stack(reference(frame[0], [112, 112]))
        assert got.shape == want.shape == (len(boxes), 3, 112, 112)
        assert torch.equal(got, want), crops
    # The centre crop alone reads only itself: the default path is unchanged.
    assert crop_region(crop_boxes("center", SPEC), SPEC) == (8, 30, 112, 112)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from tests.helpers import synthetic_frames, write_video

    return write_video(tmp_path_factory.mktemp("crops") / "clip.mp4", synthetic_frames(8, 54, 96, seed=3))


@pytest.mark.parametrize("crops,batch", [("ten", 16), pytest.param("five", 7, marks=pytest.mark.slow)])
def test_multicrop_matches_the_torchvision_oracle_and_crop_4_is_the_centre_run(checkpoints, video, crops, batch,
                                                                                monkeypatch):
    common = dict(device="cpu", checkpoint_path=str(checkpoints[R18]), stack_size=4, step_size=4, show_pred=True)
    extractor = R21DExtractor(R18, crops=crops, batch_size=batch, **common)
    # The cost: every frame preprocessed once (one region for all crops; on a CPU the decode
    # thread finishes it), the crops batched as clips.
    gathered, clip_batches = [], []
    real_blend, real_network = HostBlender.blend_into, extractor.network
    monkeypatch.setattr(HostBlender, "blend_into",
                        lambda self, p, out: gathered.append(out.shape) or real_blend(self, p, out))
    extractor.network = lambda clips: clip_batches.append(clips.shape[0]) or real_network(clips)
    result = extractor.extract_video(video)
    num_crops = 10 if crops == "ten" else 5
    assert gathered == [(128, 171, 3)] * 8  # 8 frames, each once, the whole resized frame (all crops' region)
    assert clip_batches == ([10, 10] if crops == "ten" else [5, 5])  # batch_size counts clips: 1 window each
    want = reference_multicrop_features(load_network(R18, checkpoints[R18])[0], str(video), 4, 4, crops)
    assert result.features.dtype == np.float32 and result.features.shape == want.shape == (2, num_crops, 512)
    assert rel_err(result.features, want) <= 1e-4

    centre = R21DExtractor(R18, **common).extract_video(video)
    assert centre.features.shape == (2, 512)
    assert rel_err(result.features[:, 4], centre.features) <= 1e-5
    assert rel_err(result.centre_features, centre.features) <= 1e-5
    # show_pred (and the plots) use the centre crop.
    assert result.logits.shape == (2, 400) and rel_err(result.logits, centre.logits) <= 1e-5
    if crops == "ten":  # the flipped frame's centre is columns 29..140, not the mirror of crop 4
        assert rel_err(result.features[:, 9], result.features[:, 4]) > 1e-3


def test_short_video_gives_empty_multicrop_features(checkpoints, video):
    result = R21DExtractor(R18, device="cpu", checkpoint_path=str(checkpoints[R18]), stack_size=16,
                           crops="five").extract_video(video)
    assert result.features.shape == (0, 5, 512) and result.features.dtype == np.float32


def test_unknown_crops_is_one_line_naming_the_choices():
    with pytest.raises(SettingsError, match=r"crops='three' is unknown; allowed: center, five, ten"):
        R21DSettings(crops="three")

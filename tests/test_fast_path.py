"""The fast CPU path (tap gathering, folded BatchNorm, batching, channels_last) against the
reference flow of benchmarks/reference_flow.py, with an independent, unfolded network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.reference_flow import preprocess_clip, reference_features
from r21d_features.models.r21d import R21DExtractor
from r21d_features.models.r21d.builders import build_network
from r21d_features.models.r21d.preprocess import preprocess_frames
from r21d_features.models.r21d.zoo import get_record
from tests.helpers import rel_err

R18 = "r2plus1d_18_16_kinetics"
REL_TOL = 1e-4



@pytest.fixture(scope="module")
def reference_r18(checkpoints) -> torch.nn.Module:
    """The checkpoint's network as the reference runs it: BatchNorm kept, NCDHW, float32."""
    network = build_network(get_record(R18))
    network.load_state_dict(torch.load(checkpoints[R18], map_location="cpu", weights_only=True))
    network.fc = torch.nn.Identity()
    return network.eval()


def r18_extractor(checkpoints, **kw) -> R21DExtractor:
    return R21DExtractor(R18, device="cpu", checkpoint_path=str(checkpoints[R18]), **kw)


@pytest.mark.parametrize(
    "height,width",
    [(48, 64), (144, 256), (37, 211), (128, 171), (1080, 1920), (500, 90)],  # up, down, odd, identity, HD, tall
)
def test_preprocessing_matches_whole_frame_resize(height, width):
    frames = np.random.default_rng(height + width).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    want = preprocess_clip(frames).permute(1, 0, 2, 3).numpy()  # T x 3 x 112 x 112
    got = preprocess_frames(torch.from_numpy(frames), get_record(R18).preprocessing).numpy()
    assert got.shape == want.shape == (2, 3, 112, 112)
    assert rel_err(got, want) <= 1e-5


@pytest.mark.parametrize(
    "stack,step,batch,channels_last,frames",
    [
        (None, None, 16, None, 33),  # the defaults: 16/16
        (4, 2, 4, True, 14),  # overlapping windows, the last batch short
        (3, 5, 2, False, 20),  # gaps: frames between windows are never converted
        (6, 4, 3, None, 18),
    ],
)
@pytest.mark.slow
def test_fast_path_matches_the_reference_flow(checkpoints, reference_r18, make_video, stack, step, batch, channels_last, frames):
    video = make_video("clip.mp4", num_frames=frames, height=144, width=256)
    extractor = r18_extractor(checkpoints, stack_size=stack, step_size=step, batch_size=batch,
                              channels_last=channels_last)
    got = extractor.extract(video)["r21d"]
    want = reference_features(reference_r18, str(video), extractor.stack_size, extractor.step_size)
    assert got.dtype == np.float32
    assert got.shape == want.shape and got.shape[0] >= 2
    assert rel_err(got, want) <= REL_TOL


def test_many_videos_decoded_ahead_match_the_reference_flow(checkpoints, reference_r18, make_video):
    videos = [
        make_video("small.mp4", num_frames=9, height=48, width=64, seed=1),
        make_video("short.mp4", num_frames=3, height=120, width=160, seed=3),  # no full window
        make_video("odd.mp4", num_frames=9, height=90, width=122, seed=4),
    ]
    extractor = r18_extractor(checkpoints, stack_size=4, step_size=4, batch_size=3, decode_workers=2)
    results = dict(extractor.extract_many([str(v) for v in videos]))
    assert sorted(results) == sorted(str(v) for v in videos)  # in completion order
    for video in videos:
        got = results[str(video)].features
        want = reference_features(reference_r18, str(video), 4, 4)
        assert got.shape == want.shape
        if want.size:
            assert rel_err(got, want) <= REL_TOL


def test_bf16_stays_close_to_the_reference_flow_in_fp32(checkpoints, reference_r18, make_video):
    video = make_video("clip.mp4", num_frames=16, height=96, width=128)
    # Two windows of two frames in one batch of two: bf16 without native support is emulated and slow.
    got = r18_extractor(checkpoints, stack_size=2, step_size=14, precision="bf16", batch_size=2).extract(video)["r21d"]
    want = reference_features(reference_r18, str(video), 2, 14)
    assert got.shape == want.shape == (2, 512)
    # bf16 keeps 8 bits of mantissa: about 1e-2 of the largest feature, never more than a few.
    assert 0 < rel_err(got, want) <= 5e-2

"""The streaming, batched pipeline against the naive oracle of tests/oracle.py (CPU, float32).

The oracle runs its own copy of the checkpoint's network (fresh module tree, BatchNorm kept,
NCDHW), so the product's folding and layout choices are checked too.
"""

import numpy as np
import pytest
import torch

from models.r21d import R21DExtractor
from models.r21d.builders import build_network
from models.r21d.zoo import get_record
from tests.conftest import SAMPLES
from tests.helpers import rel_err
from tests.oracle import naive_features

REL_TOL = 1e-4
R18 = "r2plus1d_18_16_kinetics"



def unfolded_network(model_name: str, checkpoint) -> torch.nn.Module:
    network = build_network(get_record(model_name))
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    network.fc = torch.nn.Identity()
    return network.eval()


def check_against_oracle(checkpoints, path, model_name: str = R18, min_windows: int = 0, **settings) -> None:
    extractor = R21DExtractor(model_name, device="cpu", checkpoint_path=str(checkpoints[model_name]), **settings)
    got = extractor.extract(path)["r21d"]
    oracle_net = unfolded_network(model_name, checkpoints[model_name])
    want = naive_features(oracle_net, str(path), extractor.stack_size, extractor.step_size)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert got.shape[0] >= min_windows
    if want.size:
        assert rel_err(got, want) <= REL_TOL


@pytest.mark.parametrize(
    "stack,step,batch",
    [(None, None, 16), (16, 8, 3), (6, 10, 2), (5, 3, 4)],  # default, overlapping, gaps, odd sizes
)
def test_r18_matches_oracle_for_window_settings(checkpoints, make_video, stack, step, batch):
    video = make_video("clip.mp4", num_frames=33, height=48, width=64)
    check_against_oracle(checkpoints, video, stack_size=stack, step_size=step, batch_size=batch, min_windows=2)


def test_r18_matches_oracle_on_a_real_sample(checkpoints):
    # 480x270 H.264 at 30 fps (158 frames), gapped windows: 8 windows of 4 frames, batches of 5 and 3.
    check_against_oracle(checkpoints, SAMPLES[0], stack_size=4, step_size=20, batch_size=5, min_windows=8)


def test_clip_shorter_than_a_window_gives_empty_features(checkpoints, make_video, caplog):
    video = make_video("short.mp4", num_frames=10)
    result = R21DExtractor(R18, device="cpu", checkpoint_path=str(checkpoints[R18])).extract_video(video)
    assert result.features.shape == (0, 512) and result.features.dtype == np.float32
    assert result.num_frames == 10
    assert "shorter than one window" in caplog.text


@pytest.mark.parametrize(
    "name,stack,step,frames",
    [
        ("r2plus1d_34_8_ig65m_ft_kinetics", None, None, 20),  # default 8/8: two windows
        ("r2plus1d_34_8_ig65m_ft_kinetics", 8, 4, 16),  # overlapping
        ("r2plus1d_34_32_ig65m_ft_kinetics", None, None, 35),  # default 32/32: one window
    ],
)
def test_ig65m_flavours_match_oracle(checkpoints, make_video, name, stack, step, frames):
    video = make_video("clip.mp4", num_frames=frames)
    check_against_oracle(checkpoints, video, model_name=name, stack_size=stack, step_size=step, batch_size=2,
                         min_windows=1)


def test_random_weights_are_the_same_network_in_every_build(make_video):
    video = make_video("clip.mp4", num_frames=8)
    first = R21DExtractor(device="cpu", random_weights=True, stack_size=4).extract(video)["r21d"]
    rng_state = torch.random.get_rng_state()
    second = R21DExtractor(device="cpu", random_weights=True, stack_size=4).extract(video)["r21d"]
    assert np.array_equal(first, second)
    assert torch.equal(rng_state, torch.random.get_rng_state())  # the caller's RNG is untouched

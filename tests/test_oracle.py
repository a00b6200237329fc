"""The streaming, batched pipeline against the naive oracle of tests/oracle.py (CPU, float32)."""

import numpy as np
import torch
import pytest

from models.r21d import R21DExtractor
from tests.conftest import SAMPLES
from tests.oracle import naive_features

REL_TOL = 1e-4


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def check_against_oracle(extractor: R21DExtractor, path, min_windows: int = 0) -> None:
    got = extractor.extract(path)["r21d"]
    want = naive_features(extractor.network, str(path), extractor.stack_size, extractor.step_size)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert got.shape[0] >= min_windows
    if want.size:
        assert rel_err(got, want) <= REL_TOL


@pytest.fixture(scope="module")
def r18(checkpoints):
    def build(**kw):
        return R21DExtractor("r2plus1d_18_16_kinetics", device="cpu", checkpoint_path=str(checkpoints["r2plus1d_18_16_kinetics"]), **kw)
    return build


@pytest.mark.parametrize(
    "stack,step,batch",
    [(None, None, 16), (16, 8, 3), (6, 10, 2), (4, 7, 1), (5, 3, 4)],  # default, overlap, gaps, tiny, odd
)
def test_r18_matches_oracle_for_window_settings(r18, make_video, stack, step, batch):
    video = make_video("clip.mp4", num_frames=33, height=48, width=64)
    check_against_oracle(r18(stack_size=stack, step_size=step, batch_size=batch), video, min_windows=2)


def test_r18_matches_oracle_on_a_real_sample(r18):
    # 480x270 H.264 at 30 fps (158 frames), gapped windows: 8 windows of 4 frames, batches of 5 and 3.
    check_against_oracle(r18(stack_size=4, step_size=20, batch_size=5), SAMPLES[0], min_windows=8)


def test_clip_shorter_than_a_window_gives_empty_features(r18, make_video, caplog):
    video = make_video("short.mp4", num_frames=10)
    result = r18().extract_video(video)
    assert result.features.shape == (0, 512) and result.features.dtype == np.float32
    assert result.num_frames == 10
    assert "shorter than one window" in caplog.text


def test_batching_does_not_change_features(r18, make_video):
    video = make_video("clip.mp4", num_frames=20)
    one = r18(stack_size=4, step_size=2, batch_size=1).extract(video)["r21d"]
    many = r18(stack_size=4, step_size=2, batch_size=7).extract(video)["r21d"]
    assert one.shape == (9, 512)
    assert rel_err(many, one) <= REL_TOL


@pytest.mark.parametrize(
    "name,stack,step,frames",
    [
        ("r2plus1d_34_8_ig65m_ft_kinetics", None, None, 20),  # default 8/8: two windows
        ("r2plus1d_34_8_ig65m_ft_kinetics", 8, 4, 16),  # overlapping
        ("r2plus1d_34_32_ig65m_ft_kinetics", None, None, 35),  # default 32/32: one window
    ],
)
def test_ig65m_flavours_match_oracle(checkpoints, make_video, name, stack, step, frames):
    extractor = R21DExtractor(name, device="cpu", checkpoint_path=str(checkpoints[name]),
                              stack_size=stack, step_size=step, batch_size=2)
    check_against_oracle(extractor, make_video("clip.mp4", num_frames=frames), min_windows=1)


def test_random_weights_are_the_same_network_in_every_build(make_video):
    video = make_video("clip.mp4", num_frames=8)
    first = R21DExtractor(device="cpu", random_weights=True, stack_size=4).extract(video)["r21d"]
    torch_state = torch.random.get_rng_state()
    second = R21DExtractor(device="cpu", random_weights=True, stack_size=4).extract(video)["r21d"]
    assert np.array_equal(first, second)
    assert torch.equal(torch_state, torch.random.get_rng_state())  # caller's RNG untouched

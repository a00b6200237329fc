"""CUDA against CPU: the same features from the GPU path (pinned taps, blend on the device,
cuDNN autotune, channels_last_3d, features kept on the device until the video ends)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r21d_features.models.r21d import R21DExtractor
from tests.helpers import rel_err

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

R18 = "r2plus1d_18_16_kinetics"



@pytest.mark.parametrize(
    "precision,tolerance",
    [("fp32", 2e-3), ("bf16", 5e-2), ("fp16", 1e-2)],  # fp32 may use TF32 on Ampere+, as the reference did
)
def test_cuda_features_match_cpu(checkpoints, make_video, precision, tolerance):
    videos = [str(make_video(f"clip{i}.mp4", num_frames=40, height=120 + 24 * i, width=160, seed=i)) for i in range(3)]
    common = dict(checkpoint_path=str(checkpoints[R18]), stack_size=8, step_size=6, batch_size=4)
    cpu = R21DExtractor(R18, device="cpu", **common)
    cuda = R21DExtractor(R18, device="cuda:0", precision=precision, decode_workers=2, **common)
    assert cuda.device.type == "cuda" and cuda.channels_last
    want = {path: cpu.extract(path)["r21d"] for path in videos}
    got = dict(cuda.extract_many(videos))
    for path in videos:
        features = got[path].features
        assert features.dtype == np.float32 and features.shape == want[path].shape == (6, 512)
        assert rel_err(features, want[path]) <= tolerance


def test_gpu_memory_is_set_by_the_batch_not_the_video(checkpoints, make_video):
    # Both longer than one decoded chunk (32 frames), so they differ only in length.
    short = str(make_video("short.mp4", num_frames=40, height=240, width=320))
    long = str(make_video("long.mp4", num_frames=400, height=240, width=320, seed=1))
    extractor = R21DExtractor(R18, device="cuda:0", checkpoint_path=str(checkpoints[R18]),
                             stack_size=8, step_size=8, batch_size=2)
    peaks = []
    for path in (short, long):
        extractor.extract(path)
        torch.cuda.reset_peak_memory_stats()
        extractor.extract(path)
        peaks.append(torch.cuda.max_memory_allocated())
    # Ten times the frames: the same peak, give or take the features kept on the device.
    assert peaks[1] <= peaks[0] * 1.2 + 16 * 2**20


def test_the_batch_loop_never_waits_for_the_device(checkpoints, make_video):
    """``set_sync_debug_mode("error")`` turns any host wait on the device inside the loop (a
    blocking copy, ``.item()``, a synchronize) into an error, which fails that video here."""
    videos = [str(make_video(f"sync{i}.mp4", num_frames=70, height=120 + 24 * i, width=160, seed=i)) for i in range(3)]
    cuda = R21DExtractor(R18, device="cuda:0", checkpoint_path=str(checkpoints[R18]), stack_size=8, step_size=8,
                         batch_size=4, decode_workers=2)
    dict(cuda.extract_many(videos[:1]))  # warm-up: the colour tables are copied to the device once
    torch.cuda.set_sync_debug_mode("error")
    try:
        results = dict(cuda.extract_many(videos))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    failed = {path: result for path, result in results.items() if isinstance(result, Exception)}
    assert not failed
    assert all(results[path].features.shape == (8, 512) for path in videos)

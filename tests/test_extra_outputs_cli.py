"""The opt-in outputs of a command as a user types it (run in process): save_plots=true save_metadata=true."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.conftest import run_here
from tests.helpers import write_test_video
from r21d_features.utils.outputs.plots import SIMILARITY_SIZE_PX, TIMELINE_SIZE_PX

MODEL = "r2plus1d_18_16_kinetics"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One CLI run over a 30-frame 12 fps clip with overlapping windows (stack 8, step 4)."""
    tmp = tmp_path_factory.mktemp("cli_extra")
    video = write_test_video(tmp / "my clip.mp4", num_frames=30, fps=12.0)
    proc = run_here("feature_type=r21d", f"video_paths=[{video}]", "device=cpu", "random_weights=true",
                    "stack_size=8", "step_size=4", "on_extraction=save_numpy", "save_plots=true", "save_metadata=true",
                    f"output_path={tmp / 'out'}", f"tmp_path={tmp / 'tmp'}", "progress=false")
    return proc, tmp / "out" / "r21d" / MODEL


def test_run_succeeds_and_writes_every_file_next_to_the_features(run):
    proc, folder = run
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == [".my clip_r21d.npy.provenance.json",
        "my clip_fps.npy", "my clip_r21d.npy", "my clip_similarity.png", "my clip_stack_size.npy",
        "my clip_step_size.npy", "my clip_top1_timeline.png", "my clip_window_frames.npy",
        "my clip_window_times_s.npy", "run_report.jsonl",
    ]


def test_metadata_times_are_frame_indices_over_fps(run):
    proc, folder = run
    assert proc.returncode == 0, proc.stderr
    features = np.load(folder / "my clip_r21d.npy")
    frames = np.load(folder / "my clip_window_frames.npy")
    times_s = np.load(folder / "my clip_window_times_s.npy")
    fps = float(np.load(folder / "my clip_fps.npy"))
    assert fps == pytest.approx(12.0)
    # 30 frames, windows of 8 every 4: starts 0, 4, ..., 20 -> 6 windows
    assert frames.tolist() == [[s, s + 8] for s in range(0, 21, 4)]
    assert features.shape == (6, 512)
    np.testing.assert_allclose(times_s, frames / fps, rtol=0, atol=1e-12)


def test_pngs_are_valid_images_of_the_documented_size(run):
    proc, folder = run
    assert proc.returncode == 0, proc.stderr
    for name, (width, height) in (("my clip_top1_timeline.png", TIMELINE_SIZE_PX),
                                  ("my clip_similarity.png", SIMILARITY_SIZE_PX)):
        image = cv2.imread(str(folder / name))
        assert image is not None, f"{name} does not load as an image"
        assert image.shape == (height, width, 3)
        assert image.std() > 10
    assert "plots of" in proc.stderr

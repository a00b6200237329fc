"""save_metadata=true: per-window frame and time spans and the fps, saved with the features."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import MODEL, run_cli_quietly, write_test_video
from r21d_features.utils.outputs.metadata import METADATA_KEYS, window_metadata
from r21d_features.utils.outputs.sinks import load_feature_file



def test_window_times_are_frame_indices_over_fps():
    bounds = [(0, 16), (8, 24), (16, 32)]
    meta = window_metadata(bounds, 29.97)
    assert meta["window_frames"].dtype == np.int64 and meta["window_frames"].tolist() == [[0, 16], [8, 24], [16, 32]]
    assert meta["window_times_s"].dtype == np.float64 and meta["window_times_s"].shape == (3, 2)
    np.testing.assert_allclose(meta["window_times_s"], np.array(bounds) / 29.97, rtol=0, atol=1e-12)
    assert meta["fps"].shape == () and float(meta["fps"]) == 29.97


def test_video_without_a_frame_rate_gets_nan_times_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        meta = window_metadata([(0, 8)], 0.0)
    assert np.isnan(meta["window_times_s"]).all()
    assert meta["window_frames"].tolist() == [[0, 8]]
    assert "fps=0.0" in caplog.text


def test_no_windows_gives_empty_spans():
    meta = window_metadata([], 25.0)
    assert meta["window_frames"].shape == (0, 2) and meta["window_times_s"].shape == (0, 2)



@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("meta") / "clip.mp4", num_frames=24, fps=12.0)


def test_pickle_metadata_matches_frame_indices_over_fps(tmp_path, video):
    code, _, err = run_cli_quietly(tmp_path, video, on_extraction="save_pickle", save_metadata=True)
    assert code == 0, err
    folder = tmp_path / "out" / "r21d" / MODEL
    features = load_feature_file(folder / "clip_r21d.pkl")
    frames = load_feature_file(folder / "clip_window_frames.pkl")
    times_s = load_feature_file(folder / "clip_window_times_s.pkl")
    fps = float(load_feature_file(folder / "clip_fps.pkl"))
    assert fps == pytest.approx(12.0)
    assert frames.tolist() == [[0, 8], [8, 16], [16, 24]]
    assert len(features) == len(frames) == len(times_s)
    np.testing.assert_allclose(times_s, frames / fps, rtol=0, atol=1e-12)


def test_default_run_writes_no_metadata_and_turning_it_on_later_extracts_again(tmp_path, video):
    folder = tmp_path / "out" / "r21d" / MODEL
    code, _, err = run_cli_quietly(tmp_path, video)
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == [".clip_r21d.npy.provenance.json", "clip_r21d.npy",
                                                        "run_report.jsonl"]

    code, _, err = run_cli_quietly(tmp_path, video, save_metadata=True)
    assert code == 0 and "1 done, 0 skipped" in err, err
    assert {f"clip_{key}.npy" for key in METADATA_KEYS} <= {p.name for p in folder.iterdir()}
    assert np.load(folder / "clip_window_frames.npy").tolist() == [[0, 8], [8, 16], [16, 24]]

    code, _, err = run_cli_quietly(tmp_path, video, save_metadata=True)
    assert code == 0 and "0 done, 1 skipped" in err, err


def test_print_shows_the_metadata_after_the_features(tmp_path, video):
    code, out, err = run_cli_quietly(tmp_path, video, on_extraction="print", save_metadata=True)
    assert code == 0, err
    keys_in_order = [line for line in out.splitlines() if line in ("r21d", *METADATA_KEYS)]
    assert keys_in_order == ["r21d", *METADATA_KEYS]
    assert "[[ 0  8]\n [ 8 16]\n [16 24]]" in out
    assert not (tmp_path / "out").exists()


def test_with_extraction_fps_the_spans_count_the_reencoded_frames(tmp_path, video):
    # 24 frames at 12 fps re-encoded to 6 fps: 12 frames, one window of 8 frames = 1.33 s
    code, _, err = run_cli_quietly(tmp_path, video, extraction_fps=6, save_metadata=True)
    assert code == 0, err
    folder = tmp_path / "out" / "r21d" / MODEL
    assert float(np.load(folder / "clip_fps.npy")) == pytest.approx(6.0)
    assert np.load(folder / "clip_window_frames.npy").tolist() == [[0, 8]]
    np.testing.assert_allclose(np.load(folder / "clip_window_times_s.npy"), [[0.0, 8 / 6]], atol=1e-9)

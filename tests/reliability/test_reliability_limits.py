"""Hard limits and hostile surroundings: slow videos, huge frames, full disk, unwritable folders."""

from __future__ import annotations

import dataclasses
import errno
import io
import logging
import os
import re
import time

import numpy as np
import pytest

from hydra import compose, initialize_config_dir

from r21d_features.configs.schema import register_configs
from r21d_features.models.r21d.settings import DEFAULT_MAX_FRAME_PIXELS
from r21d_features.utils.video.decoders.pyav_backend import PyAVReader
from r21d_features.main import run as run_cli
from r21d_features.utils.run.cli import EXIT_BAD_CONFIG
from r21d_features.utils.run.runner import run_extraction
from r21d_features.utils.outputs.sinks import FileSink, load_feature_file

from tests.conftest import REPO_ROOT
from tests.reliability.reliability_helpers import (BATCH, FEATURE_DIM, MODEL, STACK, STEP, feature_folder, leftovers,
                                                   make_clip)


def cli_settings(output, paths, checkpoint, **extra) -> dict:
    return dict(feature_type="r21d", model_name=MODEL, device="cpu", stack_size=STACK, step_size=STEP,
                checkpoint_path=str(checkpoint), on_extraction="save_numpy", output_path=str(output),
                video_paths=[str(p) for p in paths], progress=False, decode_workers=1, batch_size=BATCH, **extra)


def test_video_over_the_time_limit_fails_with_a_reason_and_the_run_goes_on(
        tmp_path, extractor, good_clips, reference, monkeypatch):
    slow = make_clip(tmp_path / "slow.mp4")
    frames = PyAVReader.frames

    def slow_frames(self, keep=None):  # a decoder stuck on a pathological file
        for item in frames(self, keep):
            if self.path == str(slow):
                time.sleep(0.1)
            yield item

    monkeypatch.setattr(PyAVReader, "frames", slow_frames)
    monkeypatch.setattr(extractor, "settings", dataclasses.replace(extractor.settings, video_timeout_s=0.5))
    sink = FileSink(tmp_path / "out", "r21d", MODEL, "npy", FEATURE_DIM)
    t0 = time.monotonic()
    summary = run_extraction(extractor, [str(slow), str(good_clips[1])], sink, progress=False)
    # 16 frames x 0.1 s would take 1.6 s; the limit cuts it at 0.5 s, never before.
    assert 0.5 <= time.monotonic() - t0
    [failed] = summary.failed
    assert failed.path == str(slow)
    # Sleeps never run short, so by the 6th frame (>= 0.6 s) the limit has passed on both sides and
    # no more frames are decoded (the model side may give up first, after fewer). This is the upper
    # bound: a limit applied late (e.g. at 1 s) lets about 10 frames through.
    decoded = int(re.fullmatch(r"took longer than video_timeout_s=0\.5 s \((\d+) frames decoded by then\).*",
                               failed.reason)[1])
    assert 1 <= decoded <= 6, failed.reason
    assert not sink.path_for(str(slow)).exists()
    np.testing.assert_array_equal(load_feature_file(sink.path_for(str(good_clips[1]))), reference["clip01"])


def test_frames_over_max_frame_pixels_are_refused_before_decoding(tmp_path, extractor, good_clips, monkeypatch):
    big = make_clip(tmp_path / "big.mp4", size="160x120")
    monkeypatch.setattr(extractor, "settings", dataclasses.replace(extractor.settings, max_frame_pixels=100 * 100))
    sink = FileSink(tmp_path / "out", "r21d", MODEL, "npy", FEATURE_DIM)
    summary = run_extraction(extractor, [str(big), str(good_clips[0])], sink, progress=False)
    assert [(o.path, o.status) for o in summary.outcomes] == [(str(big), "failed"), (str(good_clips[0]), "done")]
    assert summary.failed[0].reason.startswith("frame size 160x120 (19200 pixels) is over max_frame_pixels=10000;")


@pytest.mark.parametrize("key,value", [("video_timeout_s", 0), ("video_timeout_s", -1.0), ("max_frame_pixels", 0),
                                       ("lock_stale_s", 0.0)])
def test_limits_with_impossible_values_are_refused_before_any_work(tmp_path, good_clips, checkpoint_file, key, value):
    err = io.StringIO()
    code = run_cli(cli_settings(tmp_path / "out", good_clips[:1], checkpoint_file, **{key: value}),
                   stdout=io.StringIO(), stderr=err)
    assert code == EXIT_BAD_CONFIG
    assert f"{key}={value} is invalid" in err.getvalue()
    assert not (tmp_path / "out").exists()


def test_full_disk_fails_that_video_leaves_no_partial_file_and_a_rerun_finishes(
        tmp_path, extractor, good_clips, reference, monkeypatch):
    real_save = np.save
    calls = []

    def save_then_run_out_of_space(f, array, **kw):
        calls.append(1)
        if len(calls) == 2:  # the second video: half the bytes reach the disk, then ENOSPC
            f.write(b"\x93NUMPY" + bytes(40))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(f, array, **kw)

    monkeypatch.setattr(np, "save", save_then_run_out_of_space)
    sink = FileSink(tmp_path / "out", "r21d", MODEL, "npy", FEATURE_DIM)
    paths = [str(p) for p in good_clips[:3]]
    summary = run_extraction(extractor, paths, sink, progress=False)
    assert [o.status for o in summary.outcomes] == ["done", "failed", "done"]
    assert summary.failed[0].reason == "cannot save output: OSError: [Errno 28] No space left on device"
    assert not sink.path_for(paths[1]).exists()
    assert leftovers(sink.folder) == []

    monkeypatch.setattr(np, "save", real_save)  # space freed: the same run again does the rest
    again = run_extraction(extractor, paths, sink, progress=False)
    assert {o.path: o.status for o in again.outcomes} == dict(zip(paths, ["skipped", "done", "skipped"]))
    for p in good_clips[:3]:
        np.testing.assert_array_equal(load_feature_file(sink.path_for(str(p))), reference[p.stem])


def test_a_report_that_cannot_be_written_warns_once_and_the_run_goes_on(tmp_path, extractor, good_clips, caplog):
    (tmp_path / "not_a_folder").write_text("")
    sink = FileSink(tmp_path / "out", "r21d", MODEL, "npy", FEATURE_DIM)
    with caplog.at_level(logging.WARNING, logger="r21d_features.utils.run.runner"):
        summary = run_extraction(extractor, [str(p) for p in good_clips[:2]], sink, progress=False,
                                 report_path=tmp_path / "not_a_folder" / "run_report.jsonl")
    assert [o.status for o in summary.outcomes] == ["done", "done"]
    assert len([r for r in caplog.records if "cannot write the run report" in r.message]) == 1


def test_unwritable_output_folder_is_refused_before_any_work(tmp_path, good_clips, checkpoint_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    err = io.StringIO()
    code = run_cli(cli_settings(blocker / "features", good_clips[:1], checkpoint_file), stdout=io.StringIO(),
                   stderr=err)
    assert code == EXIT_BAD_CONFIG
    [line] = err.getvalue().splitlines()
    assert line.startswith("error: output_path: cannot write to ") and "choose a folder you can write to" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through folder permissions")
def test_read_only_output_folder_is_refused_before_any_work(tmp_path, good_clips, checkpoint_file):
    out = tmp_path / "ro"
    feature_folder(out).mkdir(parents=True)
    feature_folder(out).chmod(0o555)
    err = io.StringIO()
    try:
        code = run_cli(cli_settings(out, good_clips[:1], checkpoint_file), stdout=io.StringIO(), stderr=err)
    finally:
        feature_folder(out).chmod(0o755)
    assert code == EXIT_BAD_CONFIG and "Permission denied" in err.getvalue()


def test_duplicate_stems_are_refused_before_any_work(tmp_path, good_clips, checkpoint_file):
    twin = tmp_path / "other" / good_clips[0].name
    twin.parent.mkdir()
    twin.write_bytes(good_clips[0].read_bytes())
    err = io.StringIO()
    code = run_cli(cli_settings(tmp_path / "out", [good_clips[0], good_clips[1], twin], checkpoint_file),
                   stdout=io.StringIO(), stderr=err)
    assert code == EXIT_BAD_CONFIG
    assert repr(str(good_clips[0])) in err.getvalue() and repr(str(twin)) in err.getvalue()
    assert "share the stem 'clip00'" in err.getvalue()
    assert not (tmp_path / "out").exists()


def test_limit_keys_have_documented_defaults_that_keep_the_reference_behaviour():
    register_configs()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["max_frame_pixels=null", "video_timeout_s=3600"])
        default = compose(config_name="config")
        help_text = compose(config_name="config", return_hydra_config=True).hydra.help.footer
    assert (cfg.max_frame_pixels, cfg.video_timeout_s) == (None, 3600.0)
    assert (default.video_timeout_s, default.max_frame_pixels, default.lock_stale_s) == (
        None, DEFAULT_MAX_FRAME_PIXELS, 300.0)
    for key in ("video_timeout_s", "max_frame_pixels", "lock_stale_s"):
        assert key in help_text

"""Fault injection: every kind of bad or odd input in one run, as a user would meet them.

Each bad input fails alone with one line naming the reason, the run goes on,
the summary and the run report list it once, nothing partial is left behind;
odd but valid inputs are extracted like any other video.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from r21d_features.utils.run.claims import ClaimBook
from r21d_features.utils.run.runner import run_extraction
from r21d_features.utils.outputs.sinks import FileSink, load_feature_file

from tests.reliability.reliability_helpers import (FEATURE_DIM, MODEL, STACK, corrupt_jpeg_frame, feature_folder,
                                                   ffmpeg, leftovers, make_clip, mjpeg_frame_starts, read_report)

MJPEG = ("-c:v", "mjpeg", "-q:v", "5")

# case -> expected reason (a part of the one-line message)
BAD = {
    "missing": "file not found",
    "directory": "is a directory",
    "empty": "empty file (0 bytes)",
    "text_renamed": "cannot be opened as a video",
    "audio_only": "cannot be opened as a video",
    "truncated_index_lost": "cannot be opened as a video",
    "truncated_mid_stream": "only 8 of the 16 frames the container declares decode (truncated file?)",
    "zero_decodable_frames": "no decodable video frames",
    "corrupt_frame_mid_stream": "frame 5 does not decode but later frames do (corrupt stream)",
}
GOOD = ["short", "last_frame_corrupt", "vfr", "vfr_no_frame_index", "rotated", "odd_97x31", "uhd_4k", "ten_bit", "grayscale",
        "name with spaces", "ünïcødé 视频", "quote's \"double\"", "-leading-dash"]


def build_inputs(folder: Path, source: Path) -> dict[str, Path]:
    """One file per case under ``folder``; ``source`` is a good 16-frame clip."""
    p: dict[str, Path] = {}
    p["missing"] = folder / "missing.mp4"
    p["directory"] = folder / "a_directory.mp4"
    p["directory"].mkdir()
    p["empty"] = folder / "empty.mp4"
    p["empty"].write_bytes(b"")
    p["text_renamed"] = folder / "text_renamed.mp4"
    p["text_renamed"].write_text("these are notes, not a video\n" * 20)
    p["audio_only"] = folder / "audio_only.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(p["audio_only"]))

    # mp4 written the usual way keeps its index (moov) at the end: cut in half, it is lost.
    whole = make_clip(folder / "whole.mp4")
    p["truncated_index_lost"] = folder / "truncated_index_lost.mp4"
    p["truncated_index_lost"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    # AVI keeps its header first: cut after 8 of 16 images, the rest is missing.
    mjpeg = make_clip(folder / "mjpeg.avi", codec_args=MJPEG)
    data = mjpeg.read_bytes()
    p["truncated_mid_stream"] = folder / "truncated_mid_stream.avi"
    p["truncated_mid_stream"].write_bytes(data[: mjpeg_frame_starts(data)[8] + 100])
    p["corrupt_frame_mid_stream"] = corrupt_jpeg_frame(mjpeg, folder / "corrupt_frame_mid_stream.avi", 5)
    p["last_frame_corrupt"] = corrupt_jpeg_frame(mjpeg, folder / "last_frame_corrupt.avi", 15)
    # Index first (faststart), every coded byte zeroed: opens, but no frame decodes.
    fast = make_clip(folder / "fast.mp4", extra=("-movflags", "+faststart"))
    data = bytearray(fast.read_bytes())
    mdat = data.find(b"mdat")
    data[mdat + 4:] = bytes(len(data) - mdat - 4)
    p["zero_decodable_frames"] = folder / "zero_decodable_frames.mp4"
    p["zero_decodable_frames"].write_bytes(bytes(data))

    p["short"] = make_clip(folder / "short.mp4", frames=STACK - 1)
    p["vfr"] = make_clip(folder / "vfr.mp4", extra=(
        "-vf", "setpts='if(lt(N,8),N*2,16+(N-8)/2)/25/TB'", "-fps_mode", "vfr"))
    # mkv has no frame index: OpenCV's count (duration x fps) says 24 here; all 16 frames must still count.
    p["vfr_no_frame_index"] = make_clip(folder / "vfr_no_frame_index.mkv", extra=(
        "-vf", "setpts='if(lt(N,8),N*2,16+(N-8)/2)/25/TB'", "-fps_mode", "vfr"))
    p["rotated"] = folder / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(source), "-c", "copy", str(p["rotated"]))
    p["odd_97x31"] = make_clip(folder / "odd_97x31.mp4", size="97x31",
                               codec_args=("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"))
    p["uhd_4k"] = make_clip(folder / "uhd_4k.mp4", size="3840x2160", frames=8)
    p["ten_bit"] = make_clip(folder / "ten_bit.mp4",
                             codec_args=("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le"))
    p["grayscale"] = make_clip(folder / "grayscale.mkv", codec_args=("-c:v", "ffv1", "-pix_fmt", "gray"))
    for name in ["name with spaces", "ünïcødé 视频", "quote's \"double\"", "-leading-dash"]:
        p[name] = folder / f"{name}.mp4"
        shutil.copy(source, p[name])
    return p


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory, extractor, good_clips):
    """All the cases in one run, with claims and a run report, as the CLI does."""
    folder = tmp_path_factory.mktemp("inputs")
    inputs = build_inputs(folder, good_clips[0])
    output = folder / "out"
    sink = FileSink(output, "r21d", MODEL, "npy", FEATURE_DIM)
    with ClaimBook(sink.path_for, stale_s=60) as claims:
        summary = run_extraction(extractor, [str(p) for p in inputs.values()], sink, progress=False,
                                 report_path=feature_folder(output) / "run_report.jsonl", claims=claims)
    return inputs, sink, summary, output


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_alone_with_one_line_reason(fault_run, case):
    inputs, sink, summary, output = fault_run
    path = str(inputs[case])
    outcomes = [o for o in summary.outcomes if o.path == path]
    assert [o.status for o in outcomes] == ["failed"]
    reason = outcomes[0].reason
    assert BAD[case] in reason and "\n" not in reason and "Traceback" not in reason
    assert not sink.path_for(path).exists()
    # listed once in the console summary and once in the machine-readable report
    assert summary.format().count(f"FAILED {path}: {reason}") == 1
    assert [r["status"] for r in read_report(output) if r["path"] == path] == ["failed"]


@pytest.mark.parametrize("case", GOOD)
def test_odd_but_valid_input_is_extracted(fault_run, extractor, case):
    inputs, sink, summary, _ = fault_run
    path = str(inputs[case])
    [outcome] = [o for o in summary.outcomes if o.path == path]
    assert outcome.status == "done", outcome.reason
    saved = load_feature_file(sink.path_for(path))
    assert saved.dtype == np.float32 and saved.ndim == 2 and saved.shape[1] == FEATURE_DIM
    assert sink.path_for(path).name == f"{Path(path).stem}_r21d.npy"


def test_whole_run_continues_reports_and_leaves_nothing_partial(fault_run):
    inputs, sink, summary, output = fault_run
    assert summary.count("failed") == len(BAD) and summary.count("done") == len(GOOD)
    assert summary.exit_code == 1
    assert len(read_report(output)) == len(inputs)
    assert leftovers(feature_folder(output)) == []
    outputs = sorted(p.name for p in feature_folder(output).glob("*_r21d.npy"))
    assert outputs == sorted(f"{inputs[c].stem}_r21d.npy" for c in GOOD)


def test_shorter_than_one_window_gives_empty_features_and_a_warning(fault_run):
    inputs, sink, summary, _ = fault_run
    saved = load_feature_file(sink.path_for(str(inputs["short"])))
    assert saved.shape == (0, FEATURE_DIM)
    assert f"warning {inputs['short']}: 1 frame is shorter than one window of {STACK} frames" in summary.format()


def test_a_missing_last_frame_is_a_warning_not_a_failure(fault_run):
    inputs, _, summary, _ = fault_run
    [outcome] = [o for o in summary.outcomes if o.path == str(inputs["last_frame_corrupt"])]
    assert outcome.frames == 15
    assert outcome.warnings == ["decoded 15 of the 16 frames the container declares"]


def test_rotation_metadata_is_ignored_like_the_reference(fault_run, good_clips, reference):
    inputs, sink, _, _ = fault_run
    np.testing.assert_array_equal(load_feature_file(sink.path_for(str(inputs["rotated"]))),
                                  reference[good_clips[0].stem])


@pytest.mark.parametrize("name", ["name with spaces", "ünïcødé 视频", "quote's \"double\"", "-leading-dash"])
def test_awkward_file_names_give_the_same_features(fault_run, good_clips, reference, name):
    inputs, sink, _, _ = fault_run
    np.testing.assert_array_equal(load_feature_file(sink.path_for(str(inputs[name]))), reference[good_clips[0].stem])


@pytest.mark.parametrize("case", ["vfr", "vfr_no_frame_index"])
def test_variable_frame_rate_uses_every_stored_frame(fault_run, case):
    inputs, _, summary, _ = fault_run
    [outcome] = [o for o in summary.outcomes if o.path == str(inputs[case])]
    assert (outcome.frames, outcome.windows, outcome.warnings) == (16, 1, [])


def test_4k_frames_are_decoded_at_full_size(fault_run):
    inputs, _, summary, _ = fault_run
    [outcome] = [o for o in summary.outcomes if o.path == str(inputs["uhd_4k"])]
    assert (outcome.frames, outcome.windows) == (8, 1)


def test_running_again_skips_the_good_and_retries_the_bad(fault_run, extractor):
    inputs, sink, _, output = fault_run
    with ClaimBook(sink.path_for, stale_s=60) as claims:
        summary = run_extraction(extractor, [str(p) for p in inputs.values()], sink, progress=False, claims=claims)
    assert {o.path: o.status for o in summary.outcomes} == {
        str(p): ("failed" if case in BAD else "skipped") for case, p in inputs.items()}
